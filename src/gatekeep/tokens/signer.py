"""Issuing admission tokens for admitted queue entries."""

from __future__ import annotations

import functools
from typing import Any

import jwt

from gatekeep.model import Entry, EntryStatus
from gatekeep.tokens.keyring import Keyring

DEFAULT_ISSUER = "gatekeep"

# Tokens kept per signer, so repeated status polls of one entry skip signing. One cached token
# costs roughly 1 KB (estimate), so the default bounds the cache near 4 MB.
DEFAULT_CACHE_SIZE = 4096


class TokenSigner:
    """Signs admission tokens with the keyring's signing key.

    The same entry always yields the same token: the claims depend only on the entry and the
    issuer, and HS256 and Ed25519 signatures are deterministic. That makes caching safe.
    """

    def __init__(
        self,
        keyring: Keyring,
        *,
        issuer: str = DEFAULT_ISSUER,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self._headers = {"kid": keyring.signing_key.kid}
        self._sign_cached = functools.lru_cache(maxsize=cache_size)(self._sign)

    def issue(self, entry: Entry, *, issuer: str | None = None) -> str:
        """Return the compact JWS for an admitted entry; raise ValueError for any other entry."""
        claims = self.claims(entry, issuer=issuer)
        return self._sign_cached(tuple(claims.items()))

    def claims(self, entry: Entry, *, issuer: str | None = None) -> dict[str, Any]:
        """Return the claims of the entry's token, in the order they are serialized."""
        if entry.status != EntryStatus.ADMITTED:
            raise ValueError(
                f"entry {entry.short_id} is {entry.status}; only admitted entries get tokens"
            )
        if entry.admitted_at_ms is None or entry.session_expires_at_ms is None:
            raise ValueError(
                f"entry {entry.short_id} is admitted but has no admission or expiry time"
            )

        # Floor both times to whole seconds, so `exp` is never after the session's end.
        admitted_s = entry.admitted_at_ms // 1000
        return {
            "iss": self.issuer if issuer is None else issuer,
            "aud": entry.event_id,
            "sub": entry.device_id,
            "event_id": entry.event_id,
            "device_id": entry.device_id,
            "user_id": entry.user_id,
            "iat": admitted_s,
            "nbf": admitted_s,
            "exp": entry.session_expires_at_ms // 1000,
            "jti": entry.token_id,
            "nonce": entry.nonce,
        }

    def _sign(self, claim_items: tuple[tuple[str, Any], ...]) -> str:
        key = self.keyring.signing_key
        return jwt.encode(dict(claim_items), key.key, algorithm=key.alg, headers=self._headers)
