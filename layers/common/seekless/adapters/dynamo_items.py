"""What every DynamoDB adapter here shares: attribute-value conversion, the throttling → 503 mapping,
and collecting a page of live items across DynamoDB's own pages.

(The $connect/$disconnect store speaks attribute values by hand instead: importing boto3's serializer
would cost those handlers their cold-start budget.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from seekless.errors import ServiceUnavailable
from seekless.models import Page

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

T = TypeVar("T")
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
THROTTLED = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)


def default_client() -> DynamoDBClient:
    import boto3

    return boto3.client("dynamodb")


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    """Python values to DynamoDB attribute values; None means "leave the attribute out"."""
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def store_error(error: ClientError, store: str) -> Exception:
    """Throttling after boto3's own retries is a clear 503; anything else stays as it was."""
    if error_code(error) in THROTTLED:
        return ServiceUnavailable(f"the {store} is busy; retry shortly")
    return error


def collect_page(
    client: DynamoDBClient,
    query: dict[str, Any],
    *,
    limit: int | None,
    alive: Callable[[dict[str, Any]], bool],
    convert: Callable[[dict[str, Any]], T],
    store: str,
) -> Page[T]:
    """Up to ``limit`` live items (all of them when None), following LastEvaluatedKey: filtering expired
    items out can leave a DynamoDB page short. ``query`` should ask for ``limit + 1`` to learn has_more."""
    found: list[T] = []
    try:
        while limit is None or len(found) <= limit:
            page = client.query(**query)
            found.extend(convert(item) for item in page.get("Items", []) if alive(item))
            if "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    except ClientError as error:
        raise store_error(error, store) from error
    if limit is None:
        return Page(items=found, has_more=False)
    return Page(items=found[:limit], has_more=len(found) > limit)
