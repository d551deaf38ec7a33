"""Hand a generation to the generator function: an asynchronous Lambda invoke (InvocationType Event)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient


class LambdaInvoker:
    def __init__(self, function_name: str, *, client: LambdaClient | Any | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("lambda")
        self._client = client
        self._function = function_name

    def invoke_async(self, payload: bytes) -> None:
        # Event invocations queue inside Lambda (256 KB payload limit) and return 202 at once.
        self._client.invoke(FunctionName=self._function, InvocationType="Event", Payload=payload)
