"""When to use the response cache, and the cache key. Pure functions: no I/O.

The key covers everything that shapes the answer (model, thinking, messages, sampling parameters,
tools, response_format, max_tokens) and the tenant, so one tenant never reads another's answers and two
conversations that merely end with the same message never collide. It is a hash: no prompt text and
no credential ever appears in a Redis key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from enum import Enum
from typing import Any

CACHE_HEADER = "x-seekless-cache"  # response: hit | miss | bypass; request: "force" or "off"

# Fields of the upstream body that do not change the answer.
_NOT_IN_KEY = frozenset({"stream", "stream_options", "user_id", "user"})


class CacheMode(Enum):
    USE = "use"  # read, and write on a miss
    REFRESH = "refresh"  # Cache-Control: no-cache: skip the read, store the fresh answer
    BYPASS = "bypass"  # not cacheable, or Cache-Control: no-store / x-seekless-cache: off


def cache_mode(body: Mapping[str, Any], headers: Mapping[str, str]) -> CacheMode:
    """Deterministic requests (temperature 0) are cached by default; others when the client forces it."""
    directives = {d.strip().lower() for d in headers.get("cache-control", "").split(",") if d.strip()}
    ask = headers.get(CACHE_HEADER, "").strip().lower()
    if "no-store" in directives or ask == "off":
        return CacheMode.BYPASS
    if body.get("temperature") != 0 and ask != "force":
        return CacheMode.BYPASS
    if "no-cache" in directives:
        return CacheMode.REFRESH
    return CacheMode.USE


def cache_key(tenant_id: str, body: Mapping[str, Any]) -> str:
    shaped = {k: v for k, v in body.items() if k not in _NOT_IN_KEY and v is not None}
    canonical = json.dumps(shaped, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256()
    digest.update(tenant_id.encode())
    digest.update(b"\x00")
    digest.update(canonical.encode())
    # The hash tag keeps a key and its single-flight lease in one cluster slot.
    return "{" + digest.hexdigest() + "}"
