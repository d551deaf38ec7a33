"""Managing API keys, as an operator does it: the admin API (/v1/admin/keys) and `seekless keys --table`.

A key is shown once, in the ``IssuedKey`` that minting returns; the store keeps only its SHA-256 hash.
Its id (``key_`` and the first 12 hex digits of the hash) is not secret and names it afterwards.
What is checked here (tenant, name, limits) is checked the same whichever way the operator came in.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import fields
from typing import TypeVar

from seekless.auth import hash_key, new_key
from seekless.errors import Conflict, InvalidRequest, NotFound
from seekless.models import UNLIMITED, ApiKeyRecord, IssuedKey, KeyLimits, Page
from seekless.ports import KeyAdminStore

T = TypeVar("T")
logger = logging.getLogger("seekless.keys")

MINT_ATTEMPTS = 3  # a new key whose id is taken (a 48-bit prefix collision) is minted again
# Tenants become parts of DynamoDB keys ("T#<tenant>#S#...") and of S3 prefixes (batches/input/<tenant>/):
# a '#' or '/' in one could make two tenants' keys meet.
TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_MAX_CHARS = 256


def key_id_of(key_hash: str) -> str:
    return "key_" + key_hash[:12]


class KeyAdmin:
    def __init__(self, store: KeyAdminStore) -> None:
        self._store = store

    def create(self, tenant_id: str, *, name: str | None = None, limits: KeyLimits = UNLIMITED) -> IssuedKey:
        """A new active key for the tenant; it works at once."""
        _check_tenant(tenant_id)
        _check_name(name)
        _check_limits(limits)
        key, record = self._mint(
            lambda key_hash, key_id: self._store.create(
                key_hash, tenant_id=tenant_id, key_id=key_id, name=name, limits=limits
            )
        )
        logger.info("API key %s created for tenant %s", record.key_id, record.tenant_id)
        return IssuedKey(key=key, record=record)

    def get(self, key_id: str) -> ApiKeyRecord:
        return self._store.get(key_id)

    def list_keys(
        self, tenant_id: str | None = None, *, limit: int | None = None, after: str | None = None
    ) -> Page[ApiKeyRecord]:
        """A tenant's keys newest first (every tenant's, by tenant, when None); the page after the key
        ``after``. An operator has a handful of keys per tenant, so the page is cut from the whole list."""
        records = self._store.list_keys(tenant_id)
        if after is not None:
            ids = [record.key_id for record in records]
            if after not in ids:
                raise NotFound(f"No API key with id '{after}' in this list.", code="key_not_found", param="after")
            records = records[ids.index(after) + 1 :]
        if limit is None:
            return Page(items=records, has_more=False)
        return Page(items=records[:limit], has_more=len(records) > limit)

    def revoke(self, key_id: str) -> ApiKeyRecord:
        """Revoked now; functions that cached the key refuse it within SEEKLESS_KEY_CACHE_SECONDS."""
        record = self._store.revoke(key_id)
        logger.info("API key %s of tenant %s revoked", record.key_id, record.tenant_id)
        return record

    def rotate(self, key_id: str, *, grace_seconds: int = 0) -> IssuedKey:
        """A new key with the old one's tenant, name and limits; the old one ends after the grace period."""
        key, (old, new) = self._mint(
            lambda key_hash, new_key_id: self._store.rotate(
                key_id, key_hash, new_key_id=new_key_id, grace_seconds=grace_seconds
            )
        )
        logger.info("API key %s of tenant %s rotated to %s", old.key_id, old.tenant_id, new.key_id)
        return IssuedKey(key=key, record=new, previous=old)

    @staticmethod
    def _mint(write: Callable[[str, str], T]) -> tuple[str, T]:
        """A new key, stored by ``write(hash, key_id)``; minted again in the unlikely case its id is taken."""
        for attempt in range(MINT_ATTEMPTS):
            key = new_key()
            key_hash = hash_key(key)
            try:
                return key, write(key_hash, key_id_of(key_hash))
            except Conflict as error:
                if error.code != "key_exists" or attempt == MINT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")


def _check_tenant(tenant_id: str) -> None:
    if not TENANT.fullmatch(tenant_id):
        raise InvalidRequest(
            "A tenant is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit.",
            param="tenant",
            code="invalid_tenant",
        )


def _check_name(name: str | None) -> None:
    if name is not None and len(name) > NAME_MAX_CHARS:
        raise InvalidRequest(f"A key's name is at most {NAME_MAX_CHARS} characters.", param="name")


def _check_limits(limits: KeyLimits) -> None:
    for limit in fields(limits):
        value = getattr(limits, limit.name)
        if value is not None and value < 1:
            raise InvalidRequest(
                f"Invalid value for '{limit.name}': a limit is a positive whole number, or absent for none.",
                param=limit.name,
            )
