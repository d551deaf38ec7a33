"""schemathesis against the REST API's OpenAPI document, through the local API Gateway and Mangum."""

from __future__ import annotations

import httpx
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from seekless.api.app import create_app
from seekless_local.stack import LocalStack
from tests.fuzz.conftest import ErrorRecords, fuzz_examples

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SEED = 20260807

config = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {"max-examples": fuzz_examples(), "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
    }
)
# The document as the app builds it (the same app the stack's REST function serves: checked below), so
# that pytest can collect one test per operation before the stack is up.
DOCUMENT = create_app().openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=config)


def test_the_fuzzed_document_is_the_one_the_stack_serves(stack: LocalStack) -> None:
    assert httpx.get(stack.rest_url + "/openapi.json").json() == DOCUMENT


@schema.parametrize()
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, stack: LocalStack, server_errors: ErrorRecords
) -> None:
    case.call_and_validate(
        base_url=stack.rest_url, headers={"Authorization": f"Bearer {stack.dev_api_key}"}, checks=CHECKS
    )
    assert not server_errors.records, server_errors.describe()
