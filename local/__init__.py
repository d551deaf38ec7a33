"""Local stack and developer tooling. Never shipped in the Lambda layer, never imported by a handler."""
