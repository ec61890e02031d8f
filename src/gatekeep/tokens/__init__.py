"""Admission tokens: the keyring, the signer and verification.

Origins that only verify tokens should import `gatekeep.verify`, which needs only PyJWT.
"""

from gatekeep.tokens.keyring import Keyring, SigningKey, generate_key_file
from gatekeep.tokens.signer import TokenSigner
from gatekeep.verify import (
    MAX_TOKEN_BYTES,
    KeyConfigError,
    TokenInvalid,
    VerificationKey,
    Verifier,
    verify_token,
)

__all__ = [
    "MAX_TOKEN_BYTES",
    "KeyConfigError",
    "Keyring",
    "SigningKey",
    "TokenInvalid",
    "TokenSigner",
    "VerificationKey",
    "Verifier",
    "generate_key_file",
    "verify_token",
]
