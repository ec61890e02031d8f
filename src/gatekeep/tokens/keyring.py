"""Signing and verification keys for admission tokens, and the key file that defines them.

The key file is TOML. `signing_kid` names the key that signs new tokens, and every key in
`[[keys]]` verifies:

    signing_kid = "eddsa-20250601-3f9a1c"

    [[keys]]
    kid = "eddsa-20250601-3f9a1c"
    alg = "EdDSA"
    private_key = \"\"\"
    -----BEGIN PRIVATE KEY-----
    ...
    -----END PRIVATE KEY-----
    \"\"\"

    [[keys]]
    kid = "hs256-old"
    alg = "HS256"
    secret = "at least 32 bytes of random text"

An HS256 key has `secret`, whose UTF-8 bytes are the HMAC key. An EdDSA key has either
`private_key` (PKCS#8 PEM) or, for a verify-only key, `public_key` (SubjectPublicKeyInfo PEM).
"""

from __future__ import annotations

import os
import secrets
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gatekeep.verify import (
    ALLOWED_ALGORITHMS,
    EDDSA,
    HS256,
    KeyConfigError,
    VerificationKey,
    check_hs256_secret,
    check_kid,
    derive_hs256_kid,
    eddsa_key_from_pem,
)

KEY_FILE_FIELDS = frozenset({"signing_kid", "keys"})
KEY_FIELDS = frozenset({"kid", "alg", "secret", "private_key", "public_key"})
GENERATE_HINT = "generate a new key file with `python -m gatekeep.tokens.keygen HS256` (or EdDSA)"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The key that signs new tokens: an HS256 secret or an Ed25519 private key."""

    kid: str
    alg: str
    key: bytes | Ed25519PrivateKey

    def verification_key(self) -> VerificationKey:
        if isinstance(self.key, Ed25519PrivateKey):
            return VerificationKey(kid=self.kid, alg=self.alg, key=self.key.public_key())
        return VerificationKey(kid=self.kid, alg=self.alg, key=self.key)


class Keyring:
    """One signing key plus any number of verify-only keys, each with its own kid.

    Verify-only keys let tokens signed before a key rotation stay valid until they expire.
    """

    def __init__(
        self, signing_key: SigningKey, verify_only: Iterable[VerificationKey] = ()
    ) -> None:
        if signing_key.alg not in ALLOWED_ALGORITHMS:
            raise KeyConfigError(
                "alg", f"unsupported algorithm {signing_key.alg!r}; use HS256 or EdDSA"
            )
        if isinstance(signing_key.key, bytes):
            check_hs256_secret("secret", signing_key.key)

        keys = {signing_key.kid: signing_key.verification_key()}
        for key in verify_only:
            if key.kid in keys:
                raise KeyConfigError(
                    "kid", f"kid {key.kid!r} appears twice; give each key its own kid"
                )
            keys[key.kid] = key

        self.signing_key = signing_key
        self._verification_keys = MappingProxyType(keys)

    def __repr__(self) -> str:
        return (
            f"Keyring(signing_kid={self.signing_key.kid!r}, kids={list(self._verification_keys)!r})"
        )

    def verification_keys(self) -> Mapping[str, VerificationKey]:
        """Return every key that verifies, the signing key first, by kid."""
        return self._verification_keys

    def jwks(self) -> dict[str, Any]:
        """Return the public keys as a JWKS document. HS256 secrets are never included."""
        members = []
        for key in self._verification_keys.values():
            if not isinstance(key.key, Ed25519PublicKey):
                continue
            raw = key.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            x = jwt.utils.base64url_encode(raw).decode("ascii")
            members.append(
                {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": key.kid, "alg": EDDSA, "use": "sig"}
            )
        return {"keys": members}

    @classmethod
    def generate_hs256(cls) -> Keyring:
        """Return a keyring with a random 32-byte HS256 secret, for one embedded process."""
        secret = secrets.token_urlsafe(32).encode("ascii")
        return cls(SigningKey(kid=new_kid(HS256), alg=HS256, key=secret))

    @classmethod
    def from_hs256_secret(cls, secret: str | bytes, kid: str | None = None) -> Keyring:
        """Return a keyring that signs with `secret`; the kid defaults to one derived from it."""
        secret_bytes = secret.encode("utf-8") if isinstance(secret, str) else secret
        check_hs256_secret("secret", secret_bytes)
        kid = check_kid("kid", kid if kid is not None else derive_hs256_kid(secret_bytes))
        return cls(SigningKey(kid=kid, alg=HS256, key=secret_bytes))

    @classmethod
    def from_config(
        cls,
        secret: str | None,
        keys_file: str | os.PathLike[str] | None,
        *,
        secret_kid: str | None = None,
    ) -> Keyring:
        """Build the keyring from settings: an HS256 `secret` or a TOML `keys_file`, not both.

        Raises KeyConfigError (a ValueError) naming the setting or key-file field and the fix.
        """
        if secret is not None and keys_file is not None:
            raise KeyConfigError(
                "keys_file",
                "both a token secret and a key file are set; put the secret into the key file "
                "as an HS256 key, or unset one of them",
            )
        if keys_file is not None:
            return cls.from_key_file(keys_file)
        if secret is not None:
            return cls.from_hs256_secret(secret, secret_kid)
        raise KeyConfigError("secret", f"no token secret or key file is set; {GENERATE_HINT}")

    @classmethod
    def from_key_file(cls, path: str | os.PathLike[str]) -> Keyring:
        """Load a TOML key file; raise KeyConfigError naming the file and the bad field."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise KeyConfigError(
                "keys_file", f"cannot read {os.fspath(path)!r}: {error.strerror}; check the path"
            ) from error
        except UnicodeDecodeError as error:
            raise KeyConfigError("keys_file", f"{os.fspath(path)!r} is not UTF-8 text") from error

        try:
            return cls.from_key_file_text(text)
        except KeyConfigError as error:
            raise KeyConfigError(f"{os.fspath(path)}: {error.field}", error.detail) from error

    @classmethod
    def from_key_file_text(cls, text: str) -> Keyring:
        """Parse the TOML text of a key file; see the module docstring for the format."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise KeyConfigError("keys_file", f"invalid TOML: {error}") from error
        return cls.from_key_file_data(data)

    @classmethod
    def from_key_file_data(cls, data: Mapping[str, Any]) -> Keyring:
        """Validate a parsed key file; the error's field is a path such as `keys[1].secret`."""
        unknown = sorted(set(data) - KEY_FILE_FIELDS)
        if unknown:
            raise KeyConfigError(
                unknown[0], "unknown field; a key file has `signing_kid` and [[keys]]"
            )

        entries = data.get("keys")
        if not isinstance(entries, list) or not entries:
            raise KeyConfigError(
                "keys", f"missing or empty; add at least one [[keys]] table, or {GENERATE_HINT}"
            )
        signing_kid = data.get("signing_kid")
        if not isinstance(signing_kid, str):
            raise KeyConfigError(
                "signing_kid", "missing; set it to the kid of the key that signs new tokens"
            )

        signing: SigningKey | None = None
        verify_only: list[VerificationKey] = []
        seen: set[str] = set()
        for index, entry in enumerate(entries):
            field = f"keys[{index}]"
            key = _parse_key_entry(entry, field)
            if key.kid in seen:
                raise KeyConfigError(
                    f"{field}.kid", f"kid {key.kid!r} appears twice; give each key its own kid"
                )
            seen.add(key.kid)

            if key.kid != signing_kid:
                verify_only.append(key.verification_key() if isinstance(key, SigningKey) else key)
            elif isinstance(key, SigningKey):
                signing = key
            else:
                raise KeyConfigError(
                    f"{field}.public_key",
                    f"key {signing_kid!r} signs new tokens, so it needs `private_key`, "
                    "not `public_key`",
                )

        if signing is None:
            raise KeyConfigError(
                "signing_kid",
                f"no key has kid {signing_kid!r}; use one of: {', '.join(sorted(seen))}",
            )
        return cls(signing, verify_only)


def _parse_key_entry(entry: object, field: str) -> SigningKey | VerificationKey:
    """Return a SigningKey when the entry has secret material, else a VerificationKey."""
    if not isinstance(entry, dict):
        raise KeyConfigError(field, "expected a [[keys]] table")
    unknown = sorted(set(entry) - KEY_FIELDS)
    if unknown:
        raise KeyConfigError(
            f"{field}.{unknown[0]}",
            f"unknown field; allowed fields are {', '.join(sorted(KEY_FIELDS))}",
        )
    kid = check_kid(f"{field}.kid", entry.get("kid"))
    alg = entry.get("alg")

    if alg == HS256:
        return _parse_hs256_entry(entry, field, kid)
    if alg == EDDSA:
        return _parse_eddsa_entry(entry, field, kid)
    raise KeyConfigError(f"{field}.alg", f"unsupported algorithm {alg!r}; use 'HS256' or 'EdDSA'")


def _parse_hs256_entry(entry: dict[str, Any], field: str, kid: str) -> SigningKey:
    for name in ("private_key", "public_key"):
        if name in entry:
            raise KeyConfigError(
                f"{field}.{name}", "an HS256 key has only `secret`; remove this field"
            )
    secret = entry.get("secret")
    if not isinstance(secret, str):
        raise KeyConfigError(
            f"{field}.secret",
            "missing; an HS256 key needs `secret`, at least 32 random bytes of text",
        )
    secret_bytes = secret.encode("utf-8")
    check_hs256_secret(f"{field}.secret", secret_bytes)
    return SigningKey(kid=kid, alg=HS256, key=secret_bytes)


def _parse_eddsa_entry(entry: dict[str, Any], field: str, kid: str) -> SigningKey | VerificationKey:
    if "secret" in entry:
        raise KeyConfigError(
            f"{field}.secret", "an EdDSA key has `private_key` or `public_key`, not `secret`"
        )
    private_pem = entry.get("private_key")
    public_pem = entry.get("public_key")
    if (private_pem is None) == (public_pem is None):
        raise KeyConfigError(
            field,
            "an EdDSA key needs exactly one of `private_key` (signs and verifies) "
            "or `public_key` (verifies only)",
        )

    if public_pem is not None:
        if not isinstance(public_pem, str):
            raise KeyConfigError(f"{field}.public_key", "expected a PEM string")
        try:
            return eddsa_key_from_pem(kid, public_pem)
        except KeyConfigError as error:
            raise KeyConfigError(f"{field}.public_key", error.detail) from error

    if not isinstance(private_pem, str):
        raise KeyConfigError(f"{field}.private_key", "expected a PEM string")
    return SigningKey(
        kid=kid, alg=EDDSA, key=_load_ed25519_private_key(private_pem, f"{field}.private_key")
    )


def _load_ed25519_private_key(pem: str, field: str) -> Ed25519PrivateKey:
    try:
        loaded = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except TypeError as error:
        # cryptography raises TypeError for an encrypted key loaded without a password.
        raise KeyConfigError(
            field,
            "encrypted private keys are not supported; store the key unencrypted in a file "
            "that only the service can read",
        ) from error
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm) as error:
        raise KeyConfigError(
            field, "not a valid PKCS#8 PEM private key; paste the whole PEM block"
        ) from error
    if not isinstance(loaded, Ed25519PrivateKey):
        raise KeyConfigError(field, f"expected an Ed25519 private key, got {type(loaded).__name__}")
    return loaded


def new_kid(alg: str) -> str:
    """Return a fresh kid such as `eddsa-20250601-3f9a1c`: algorithm, UTC date, random part."""
    return f"{alg.lower()}-{time.strftime('%Y%m%d', time.gmtime())}-{secrets.token_hex(3)}"


def generate_key_file(alg: str = HS256, *, kid: str | None = None) -> str:
    """Return the TOML text of a new key file with one fresh signing key of `alg`."""
    kid = check_kid("kid", kid if kid is not None else new_kid(alg))
    if alg == HS256:
        material = f'secret = "{secrets.token_urlsafe(32)}"'
    elif alg == EDDSA:
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        material = f'private_key = """\n{pem.decode("ascii")}"""'
    else:
        raise KeyConfigError("alg", f"unsupported algorithm {alg!r}; use 'HS256' or 'EdDSA'")

    return (
        "# Gatekeep admission-token keys. Keep this file secret: it contains signing keys.\n"
        "# `signing_kid` names the key that signs new tokens; every [[keys]] entry verifies.\n"
        f'signing_kid = "{kid}"\n'
        "\n"
        "[[keys]]\n"
        f'kid = "{kid}"\n'
        f'alg = "{alg}"\n'
        f"{material}\n"
    )
