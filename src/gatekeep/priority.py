"""Priority codes: operator-made codes that put the client joining with one into a named bucket.

A code is a bearer secret shown once, when it is created. The store keeps only its SHA-256 and
a `code_id`, the first 16 hex digits of that hash, which names it in listings, logs and the
disable call. A single-use code allows one join that creates an entry; a multi-use code allows
`max_uses` such joins, or any number when `max_uses` is 0.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

CODE_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,128}")
CODE_ID_PATTERN = re.compile(r"[0-9a-f]{16}")
MAX_CODES_PER_CALL = 1000


@dataclass(frozen=True, slots=True)
class PriorityCode:
    """A stored priority code, without the code itself."""

    code_id: str
    code_hash: str  # SHA-256 hex of the code
    bucket: str
    max_uses: int  # 0 = unlimited
    uses: int
    disabled: bool
    created_at_ms: int

    def to_public(self) -> dict[str, Any]:
        """Render the code as the admin API lists it: no hash, no code."""
        return {
            "code_id": self.code_id,
            "bucket": self.bucket,
            "max_uses": self.max_uses,
            "uses": self.uses,
            "disabled": self.disabled,
            "created_at_ms": self.created_at_ms,
        }

    def to_stored(self) -> dict[str, Any]:
        """Render the code in the compact form the Redis scripts read."""
        return {
            "h": self.code_hash,
            "b": self.bucket,
            "m": self.max_uses,
            "u": self.uses,
            "d": 1 if self.disabled else 0,
            "c": self.created_at_ms,
        }

    @classmethod
    def from_stored(cls, code_id: str, stored: dict[str, Any]) -> PriorityCode:
        return cls(
            code_id=code_id,
            code_hash=str(stored["h"]),
            bucket=str(stored["b"]),
            max_uses=int(stored["m"]),
            uses=int(stored["u"]),
            disabled=bool(stored["d"]),
            created_at_ms=int(stored["c"]),
        )

    @property
    def available(self) -> bool:
        return not self.disabled and (self.max_uses == 0 or self.uses < self.max_uses)


def hash_code(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def code_id_of(code: str) -> str:
    return hash_code(code)[:16]


def new_code() -> str:
    """Return a new code of 128 random bits in base64url (22 characters)."""
    return secrets.token_urlsafe(16)


# Messages of the join errors for a priority code that cannot be redeemed, by store status.
PRIORITY_CODE_MESSAGES = {
    "priority_code_invalid": "unknown priority code; check the code you were given",
    "priority_code_disabled": "this priority code was disabled; join without it",
    "priority_code_used": "this priority code has no uses left; join without it",
}
