"""GET /: the reference chat page (static/chat.html), one self-contained file with no external resources.

The Content-Security-Policy allows exactly the page's own inline script and style (by hash, so an
injected script or style would not run), fetches to this origin (the ticket) and WebSocket
connections (the deployed WebSocket API lives on another host, which this function does not know).
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["page"])
_NONE = "'none'"
_INLINE = {
    kind: re.compile(rf"<{kind}(?:\s[^>]*)?>(.*?)</{kind}>", re.DOTALL | re.IGNORECASE) for kind in ("script", "style")
}


def _hashes(html: str, kind: str) -> str:
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE[kind].findall(html)
    )


@lru_cache(maxsize=1)
def page() -> tuple[bytes, dict[str, str]]:
    """The page and its headers, read on first request (nothing happens at import)."""
    html = (files("seekless.api") / "static" / "chat.html").read_text(encoding="utf-8")
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src {_hashes(html, 'script') or _NONE}",
            f"style-src {_hashes(html, 'style') or _NONE}",
            "connect-src 'self' ws: wss:",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    return html.encode("utf-8"), headers


@router.get("/", include_in_schema=False, response_class=HTMLResponse)
def chat_page() -> HTMLResponse:
    body, headers = page()
    return HTMLResponse(body, media_type="text/html; charset=utf-8", headers=headers)
