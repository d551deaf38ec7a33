"""Cache policy and keys: what is cacheable, and that keys isolate tenants and never leak content."""

from __future__ import annotations

import pytest

from seekless.caching import CacheMode, cache_key, cache_mode

BODY = {"model": "deepseek-flash", "messages": [{"role": "user", "content": "secret plan"}], "temperature": 0}


@pytest.mark.parametrize(
    ("body", "headers", "mode"),
    [
        (BODY, {}, CacheMode.USE),
        ({**BODY, "temperature": 0.7}, {}, CacheMode.BYPASS),
        ({**BODY, "temperature": None}, {}, CacheMode.BYPASS),
        ({**BODY, "temperature": 0.7}, {"x-seekless-cache": "force"}, CacheMode.USE),
        (BODY, {"x-seekless-cache": "off"}, CacheMode.BYPASS),
        (BODY, {"cache-control": "no-cache"}, CacheMode.REFRESH),
        (BODY, {"cache-control": "max-age=0, no-store"}, CacheMode.BYPASS),
    ],
)
def test_cache_mode(body: dict, headers: dict, mode: CacheMode) -> None:
    assert cache_mode(body, headers) is mode


def test_key_depends_on_tenant_and_whole_request_not_the_last_message_alone() -> None:
    base = cache_key("dev", BODY)
    assert cache_key("other", BODY) != base
    longer = {**BODY, "messages": [{"role": "system", "content": "be brief"}, *BODY["messages"]]}
    assert cache_key("dev", longer) != base
    assert cache_key("dev", {**BODY, "max_tokens": 5}) != base
    assert cache_key("dev", {**BODY, "thinking": {"type": "disabled"}}) != base


def test_key_ignores_transport_fields_and_key_order() -> None:
    reordered = dict(reversed(list(BODY.items())))
    assert cache_key("dev", {**reordered, "stream": True, "user_id": "t_x"}) == cache_key("dev", BODY)


def test_key_is_a_hash_tagged_digest_without_content() -> None:
    key = cache_key("dev", BODY)
    assert key.startswith("{") and key.endswith("}") and len(key) == 66
    assert "secret" not in key and "dev" not in key
