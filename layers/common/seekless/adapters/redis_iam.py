"""ElastiCache IAM authentication for redis-py: a ``CredentialProvider`` whose password is a token.

The cache's users authenticate with IAM (template.yaml, CacheAppUser), so there is no Redis password
to store, rotate or leak. The token is what AWS documents for ElastiCache: a SigV4-presigned
``GET http://{cache_name}/?Action=connect&User={user_id}`` (plus ``ResourceType=ServerlessCache`` for
a serverless cache) for the service ``elasticache``, sent as the AUTH password without its
``http://`` prefix. It is valid for 15 minutes and is checked only when a connection authenticates,
so an open connection outlives its token; ElastiCache drops IAM-authenticated connections after
12 hours, and redis-py then reconnects with a fresh one.

Signing is local HMAC work (no network), so a token costs microseconds; one is still reused for most
of its life, and re-signed well before it expires so that a connection opened just before the
deadline never presents a token that lapses on the way. Credentials come from botocore's default
chain (the Lambda role's environment, the ECS task role's endpoint) and are read at each signing,
so rotated role credentials are picked up.

Neither the token nor the credentials are logged, and the provider's repr shows neither. botocore
itself logs the canonical request and the signature at DEBUG, which together are the token: those
records are dropped while this module signs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from redis.credentials import CredentialProvider
from redis.exceptions import AuthenticationError

if TYPE_CHECKING:
    from botocore.credentials import Credentials

SERVICE = "elasticache"
TOKEN_SECONDS = 900  # the most ElastiCache accepts
REFRESH_SECONDS = 600  # a new token this long after the last: 5 minutes of margin before it lapses

_signing = threading.local()


class _WhileSigning(logging.Filter):
    """Drops botocore.auth's records on a thread that is signing a token (they would spell it out)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_signing, "active", False)


_QUIET = _WhileSigning()


class ElastiCacheIamCredentials(CredentialProvider):
    """``(user_id, token)`` for AUTH/HELLO as an IAM-enabled ElastiCache user.

    ``credentials`` and ``region`` default to botocore's chain (what boto3 clients use); tests pass a
    fixed ``Credentials`` object. ``clock`` is only for deciding when to re-sign.
    """

    def __init__(
        self,
        user_id: str,
        cache_name: str,
        *,
        region: str | None = None,
        serverless: bool = True,
        credentials: Credentials | None = None,
        clock: Callable[[], float] = time.monotonic,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        if not user_id or not cache_name:
            raise ValueError("ElastiCache IAM authentication needs a user id and a cache name")
        if not 0 < refresh_seconds < TOKEN_SECONDS:
            raise ValueError(f"refresh_seconds must be between 0 and {TOKEN_SECONDS}")
        self.user_id = user_id
        # ElastiCache names are lower case, and the signed host must match the name exactly.
        self.cache_name = cache_name.lower()
        self.serverless = serverless
        self._region = region
        self._credentials = credentials
        self._clock = clock
        self._refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._token: str | None = None
        self._signed_at = 0.0

    def __repr__(self) -> str:
        return f"ElastiCacheIamCredentials(user_id={self.user_id!r}, cache_name={self.cache_name!r})"

    def get_credentials(self) -> tuple[str, str]:
        # One lock for the sync client's threads; the async client calls this from its one loop.
        with self._lock:
            now = self._clock()
            if self._token is None or now - self._signed_at >= self._refresh_seconds:
                try:
                    self._token = self._sign()
                except Exception as error:
                    # A Redis error, so the adapters treat it as Redis being unreachable (fail open)
                    # rather than failing the request.
                    raise AuthenticationError("could not sign an ElastiCache IAM token") from error
                self._signed_at = now
            return self.user_id, self._token

    async def get_credentials_async(self) -> tuple[str, str]:
        # Signing is CPU-only and takes microseconds: no thread hop needed.
        return self.get_credentials()

    def _resolve(self) -> tuple[Credentials, str]:
        """The given credentials and region, else botocore's default chain, resolved once (temporary
        credentials refresh themselves when the signer asks for them)."""
        if self._credentials is None or not self._region:
            import botocore.session

            session = botocore.session.get_session()
            self._credentials = self._credentials or session.get_credentials()
            self._region = self._region or session.get_config_variable("region")
        if self._credentials is None or not self._region:
            raise RuntimeError("no AWS credentials or region to sign an ElastiCache IAM token with")
        return self._credentials, self._region

    def _sign(self) -> str:
        from botocore.hooks import HierarchicalEmitter
        from botocore.model import ServiceId
        from botocore.signers import RequestSigner

        credentials, region = self._resolve()
        params = {"Action": "connect", "User": self.user_id}
        if self.serverless:
            params["ResourceType"] = "ServerlessCache"
        # The signer holds its emitter by weak reference: keep one alive for the call.
        emitter = HierarchicalEmitter()
        signer = RequestSigner(ServiceId(SERVICE), region, SERVICE, "v4", credentials, emitter)
        # http, not https: ElastiCache verifies the signature of exactly this request, and for a plain
        # http URL botocore signs the (empty) payload's hash as the service expects.
        request: dict[str, Any] = {
            "method": "GET",
            "url": f"http://{self.cache_name}/?{urlencode(params)}",
            "body": {},
            "headers": {},
            "context": {},
        }
        auth_logger = logging.getLogger("botocore.auth")
        if _QUIET not in auth_logger.filters:
            auth_logger.addFilter(_QUIET)
        _signing.active = True
        try:
            url = signer.generate_presigned_url(
                request, operation_name="connect", expires_in=TOKEN_SECONDS, region_name=region
            )
        finally:
            _signing.active = False
        return str(url).removeprefix("http://")
