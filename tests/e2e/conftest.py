"""End-to-end tier: the whole local stack as `make dev` runs it (job worker and SQS event sources on),
driven the way its users drive it: the `seekless` CLI, S3 uploads, SQS messages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from seekless_local.stack import LocalStack
from tests.stacks import clean_upstream, emulated_stack

# The DeepSeek key every function of this stack holds: test_secrets.py looks for it everywhere it must
# never be (the emulator accepts any key).
CANARY_DEEPSEEK_KEY = "sk-canary-deepseek-3f8e21c0d9b74a65"


@pytest.fixture(scope="package")
def stack() -> Iterator[LocalStack]:
    with emulated_stack(worker=True, extra_env={"DEEPSEEK_API_KEY": CANARY_DEEPSEEK_KEY}) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean_upstream(stack: LocalStack) -> Iterator[None]:
    with clean_upstream(stack):
        yield
