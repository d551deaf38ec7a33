"""seekless runtime package: what the Lambda layer ships."""
