"""Verification of Gatekeep admission tokens, for origins and for the server.

This module needs only PyJWT, plus the `cryptography` package for EdDSA keys. It imports
nothing else from gatekeep, so an origin can use it without the server's dependencies.

A token is a compact JWS signed with HS256 or EdDSA (Ed25519). Checks run in this order, and
the first failure raises TokenInvalid with its `reason`:

    too_large        the token is over MAX_TOKEN_BYTES (checked before any parsing)
    malformed        not three canonical base64url segments, a header that is not a JSON object
                     with string `alg` and `kid`, or a `crit`/`b64` header
    alg_not_allowed  `alg` is not HS256 or EdDSA (so `none` is rejected)
    unknown_kid      no verification key has the header's `kid`
    alg_not_allowed  `alg` differs from the algorithm of the key that `kid` names
    bad_signature    the signature does not match
    malformed        a payload that is not a JSON object, or a missing or mistyped claim
    expired          now_s >= exp + leeway_s
    not_yet_valid    now_s + leeway_s < nbf
    wrong_event      `event_id` or `aud` differs from the expected event
    wrong_device     `device_id` or `sub` differs from the expected device (when one is given)

The Node and Go verifiers under sdk/verifiers implement the same rules, and the vectors in
tests/vectors check that all three agree.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

import jwt

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

HS256 = "HS256"
EDDSA = "EdDSA"
ALLOWED_ALGORITHMS = (HS256, EDDSA)

# Gatekeep's own tokens are about 500 bytes with typical ids, and 1267 bytes with every id at
# its 128-character maximum (EdDSA). The limit bounds the work done before the signature check.
MAX_TOKEN_BYTES = 4096

DEFAULT_LEEWAY_S = 5.0

# An HS256 secret shorter than the SHA-256 output weakens the MAC (RFC 7518, section 3.2).
MIN_HS256_SECRET_BYTES = 32

KID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
KID_RULE = "use 1 to 64 characters from A-Z, a-z, 0-9 and . _ : -"

Reason: TypeAlias = Literal[
    "malformed",
    "bad_signature",
    "unknown_kid",
    "alg_not_allowed",
    "expired",
    "not_yet_valid",
    "wrong_event",
    "wrong_device",
    "too_large",
]

STRING_CLAIMS = ("iss", "aud", "sub", "event_id", "device_id", "jti", "nonce")
TIME_CLAIMS = ("iat", "nbf", "exp")

_SEGMENT_PATTERN = re.compile(r"[A-Za-z0-9_-]*")

# Used for signature checks only. This module checks the claims, so callers can fix `now_s`.
_JWS = jwt.PyJWS(algorithms=list(ALLOWED_ALGORITHMS))


class TokenInvalid(Exception):
    """Raised when a token fails verification. `reason` is a stable code; the message may change."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: Reason = reason
        self.message = message


class KeyConfigError(ValueError):
    """Raised for an invalid key or key file. `field` names the setting; the message has the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A key that checks signatures. `alg` belongs to the key, so a token header can't change it."""

    kid: str
    alg: str
    key: bytes | Ed25519PublicKey  # the HS256 secret, or the Ed25519 public key


class KeyProvider(Protocol):
    """Anything that returns verification keys by kid, such as `gatekeep.tokens.Keyring`."""

    def verification_keys(self) -> Mapping[str, VerificationKey]: ...


# A JWKS document (`{"keys": [...]}`), a dict of kid to VerificationKey, a KeyProvider, or
# VerificationKey objects.
KeySource: TypeAlias = KeyProvider | Mapping[str, Any] | Iterable[VerificationKey]


def check_kid(field: str, kid: object) -> str:
    """Return `kid` when it is a valid key id; raise KeyConfigError naming `field` otherwise."""
    if not isinstance(kid, str) or not KID_PATTERN.fullmatch(kid):
        raise KeyConfigError(field, f"invalid kid {kid!r}; {KID_RULE}")
    return kid


def derive_hs256_kid(secret: bytes) -> str:
    """Return the default kid of an HS256 secret, so every process that shares it agrees.

    The kid reveals 64 bits of the secret's SHA-256. Anyone holding a token can already test
    guesses of the secret against its MAC, so this adds no attack.
    """
    return "hs256-" + hashlib.sha256(secret).hexdigest()[:16]


def hs256_key(secret: str | bytes, kid: str | None = None) -> VerificationKey:
    """Build an HS256 verification key; a `str` secret is used as its UTF-8 bytes."""
    secret_bytes = secret.encode("utf-8") if isinstance(secret, str) else secret
    check_hs256_secret("secret", secret_bytes)
    if kid is None:
        kid = derive_hs256_kid(secret_bytes)
    return VerificationKey(kid=check_kid("kid", kid), alg=HS256, key=secret_bytes)


def check_hs256_secret(field: str, secret: bytes) -> None:
    """Raise KeyConfigError unless `secret` is long enough and PyJWT accepts it as an HMAC key."""
    if len(secret) < MIN_HS256_SECRET_BYTES:
        raise KeyConfigError(
            field,
            f"the HS256 secret is {len(secret)} bytes; use at least {MIN_HS256_SECRET_BYTES} "
            "random bytes, for example the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
        )
    try:
        _JWS.get_algorithm_by_name(HS256).prepare_key(secret)
    except jwt.InvalidKeyError as error:
        # PyJWT rejects PEM, SSH and DER keys as HMAC secrets, which blocks alg confusion.
        raise KeyConfigError(
            field, f"{error}; use a random secret, not a public or private key"
        ) from error


def eddsa_key_from_pem(kid: str, public_key_pem: str | bytes) -> VerificationKey:
    """Build an EdDSA verification key from a PEM Ed25519 public key (SubjectPublicKeyInfo)."""
    Ed25519PublicKey, serialization = _import_ed25519("public_key")
    pem = public_key_pem.encode("ascii") if isinstance(public_key_pem, str) else public_key_pem
    try:
        loaded = serialization.load_pem_public_key(pem)
    except ValueError as error:
        raise KeyConfigError(
            "public_key", f"not a valid PEM public key ({error}); paste the whole PEM block"
        ) from error
    if not isinstance(loaded, Ed25519PublicKey):
        raise KeyConfigError(
            "public_key", f"expected an Ed25519 public key, got {type(loaded).__name__}"
        )
    return VerificationKey(kid=check_kid("kid", kid), alg=EDDSA, key=loaded)


def key_from_jwk(jwk: Mapping[str, Any], field: str = "jwk") -> VerificationKey:
    """Build a verification key from one JWK: `OKP`/`Ed25519` public keys or `oct` HS256 secrets."""
    if not isinstance(jwk, Mapping):
        raise KeyConfigError(field, "expected a JSON object (a JWK)")
    kid = check_kid(f"{field}.kid", jwk.get("kid"))
    use = jwk.get("use", "sig")
    if use != "sig":
        raise KeyConfigError(f"{field}.use", f"expected 'sig', got {use!r}")
    kty = jwk.get("kty")

    if kty == "OKP":
        return _okp_key_from_jwk(jwk, field, kid)
    if kty == "oct":
        alg = jwk.get("alg")
        if alg != HS256:
            raise KeyConfigError(f"{field}.alg", f"an oct key needs alg 'HS256', got {alg!r}")
        secret = _decode_jwk_bytes(jwk, "k", field)
        check_hs256_secret(f"{field}.k", secret)
        return VerificationKey(kid=kid, alg=HS256, key=secret)
    raise KeyConfigError(f"{field}.kty", f"unsupported key type {kty!r}; use 'OKP' or 'oct'")


def _okp_key_from_jwk(jwk: Mapping[str, Any], field: str, kid: str) -> VerificationKey:
    if jwk.get("crv") != "Ed25519":
        raise KeyConfigError(f"{field}.crv", f"expected 'Ed25519', got {jwk.get('crv')!r}")
    if jwk.get("alg", EDDSA) != EDDSA:
        raise KeyConfigError(
            f"{field}.alg", f"an Ed25519 key needs alg 'EdDSA', got {jwk['alg']!r}"
        )
    if "d" in jwk:
        raise KeyConfigError(
            f"{field}.d", "the JWK contains a private key; give origins only the public part"
        )
    raw = _decode_jwk_bytes(jwk, "x", field)
    if len(raw) != 32:
        raise KeyConfigError(f"{field}.x", f"an Ed25519 public key is 32 bytes, got {len(raw)}")
    Ed25519PublicKey, _ = _import_ed25519(f"{field}.x")
    return VerificationKey(kid=kid, alg=EDDSA, key=Ed25519PublicKey.from_public_bytes(raw))


def _decode_jwk_bytes(jwk: Mapping[str, Any], member: str, field: str) -> bytes:
    value = jwk.get(member)
    decoded = b64url_decode_strict(value) if isinstance(value, str) else None
    if decoded is None:
        raise KeyConfigError(f"{field}.{member}", "missing or not unpadded base64url")
    return decoded


def keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, VerificationKey]:
    """Build verification keys by kid from a JWKS document (`{"keys": [...]}`)."""
    members = jwks.get("keys")
    if not isinstance(members, list):
        raise KeyConfigError("keys", 'expected a JWKS document: {"keys": [ ... ]}')
    return _index_by_kid(key_from_jwk(jwk, f"keys[{i}]") for i, jwk in enumerate(members))


def collect_keys(source: KeySource) -> Mapping[str, VerificationKey]:
    """Return verification keys by kid from any KeySource; raise KeyConfigError for a bad key."""
    if isinstance(source, Mapping):
        if isinstance(source.get("keys"), list):
            return keys_from_jwks(source)
        if all(isinstance(key, VerificationKey) for key in source.values()):
            return source
        raise KeyConfigError(
            "keys", 'expected a JWKS document {"keys": [...]} or a dict of kid to VerificationKey'
        )
    if isinstance(source, VerificationKey):
        return {source.kid: source}
    verification_keys = getattr(source, "verification_keys", None)
    if callable(verification_keys):
        provided: Mapping[str, VerificationKey] = verification_keys()
        return provided
    return _index_by_kid(source)  # type: ignore[arg-type]


def _index_by_kid(keys: Iterable[VerificationKey]) -> dict[str, VerificationKey]:
    indexed: dict[str, VerificationKey] = {}
    for key in keys:
        if not isinstance(key, VerificationKey):
            raise KeyConfigError(
                "keys", f"expected VerificationKey objects, got {type(key).__name__}"
            )
        if key.kid in indexed:
            raise KeyConfigError(
                "keys", f"kid {key.kid!r} appears twice; give each key its own kid"
            )
        indexed[key.kid] = key
    return indexed


def b64url_decode_strict(segment: str) -> bytes | None:
    """Decode unpadded base64url, or return None unless `segment` is its one canonical encoding.

    Rejecting padding, other alphabets and non-zero spare bits means that changing any
    character of a token changes the decoded bytes.
    """
    if len(segment) % 4 == 1 or not _SEGMENT_PATTERN.fullmatch(segment):
        return None
    try:
        decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error:
        return None
    if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode("ascii") != segment:
        return None
    return decoded


def verify_token(
    token: str | bytes,
    keys: KeySource,
    *,
    event_id: str,
    device_id: str | None = None,
    leeway_s: float = DEFAULT_LEEWAY_S,
    now_s: float | None = None,
) -> dict[str, Any]:
    """Verify an admission token for `event_id` and return its claims.

    `device_id=None` skips the device check. `now_s` defaults to the system clock (Unix
    seconds). Raises TokenInvalid; see the module docstring for the reasons and their order.
    """
    return _verify(token, collect_keys(keys), event_id, device_id, leeway_s, now_s)


def _verify(
    token: str | bytes,
    keys: Mapping[str, VerificationKey],
    event_id: str,
    device_id: str | None,
    leeway_s: float,
    now_s: float | None,
) -> dict[str, Any]:
    text = _check_size(token)
    header = _parse_structure(text)
    key = _select_key(header, keys)
    payload = _check_signature(text, key)
    claims = _parse_claims(payload)

    current_s = time.time() if now_s is None else now_s
    _check_time(claims, current_s, leeway_s)
    _check_subject(claims, event_id, device_id)
    return claims


def _check_size(token: str | bytes) -> str:
    if isinstance(token, bytes):
        size = len(token)
    elif isinstance(token, str):
        size = len(token) if token.isascii() else len(token.encode("utf-8", "surrogatepass"))
    else:
        raise TokenInvalid(
            "malformed", f"expected the token as str or bytes, got {type(token).__name__}"
        )
    if size > MAX_TOKEN_BYTES:
        raise TokenInvalid(
            "too_large", f"the token is {size} bytes; the maximum is {MAX_TOKEN_BYTES}"
        )

    if isinstance(token, bytes):
        if not token.isascii():
            raise TokenInvalid("malformed", "the token contains non-ASCII bytes")
        return token.decode("ascii")
    if not token.isascii():
        raise TokenInvalid("malformed", "the token contains non-ASCII characters")
    return token


def _parse_structure(token: str) -> dict[str, Any]:
    """Check the three segments and return the decoded header."""
    segments = token.split(".")
    if len(segments) != 3:
        raise TokenInvalid("malformed", f"expected 3 dot-separated segments, got {len(segments)}")
    decoded = [b64url_decode_strict(segment) for segment in segments]
    for name, value in zip(("header", "payload", "signature"), decoded, strict=True):
        if value is None:
            raise TokenInvalid(
                "malformed", f"the {name} segment is not canonical unpadded base64url"
            )

    header = _parse_json_object(decoded[0], "header")  # type: ignore[arg-type]
    if not isinstance(header.get("alg"), str):
        raise TokenInvalid("malformed", "the header has no string `alg`")
    if not isinstance(header.get("kid"), str):
        raise TokenInvalid("malformed", "the header has no string `kid`")
    if "crit" in header or "b64" in header:
        raise TokenInvalid("malformed", "the header uses `crit` or `b64`, which are not supported")
    return header


def _parse_json_object(data: bytes, name: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise TokenInvalid("malformed", f"the {name} is not valid UTF-8 JSON") from error
    if not isinstance(value, dict):
        raise TokenInvalid("malformed", f"the {name} is not a JSON object")
    return value


def _reject_constant(name: str) -> None:
    # JSON has no NaN or Infinity, but Python's parser accepts them unless this hook rejects them.
    raise ValueError(f"{name} is not valid JSON")


def _select_key(header: dict[str, Any], keys: Mapping[str, VerificationKey]) -> VerificationKey:
    alg = header["alg"]
    if alg not in ALLOWED_ALGORITHMS:
        raise TokenInvalid(
            "alg_not_allowed", f"alg {alg[:20]!r} is not allowed; use HS256 or EdDSA"
        )
    key = keys.get(header["kid"])
    if key is None:
        raise TokenInvalid("unknown_kid", f"no verification key has kid {header['kid'][:64]!r}")
    if key.alg != alg:
        raise TokenInvalid(
            "alg_not_allowed", f"the header has alg {alg!r}, but key {key.kid!r} is {key.alg}"
        )
    return key


def _check_signature(token: str, key: VerificationKey) -> bytes:
    try:
        decoded = _JWS.decode_complete(token, key.key, algorithms=[key.alg])
    except jwt.InvalidSignatureError as error:
        raise TokenInvalid("bad_signature", "the signature does not match") from error
    except jwt.InvalidAlgorithmError as error:
        raise TokenInvalid("alg_not_allowed", str(error)) from error
    except jwt.DecodeError as error:
        raise TokenInvalid("malformed", str(error)) from error
    payload: bytes = decoded["payload"]
    return payload


def _parse_claims(payload: bytes) -> dict[str, Any]:
    claims = _parse_json_object(payload, "payload")
    for name in STRING_CLAIMS:
        if not isinstance(claims.get(name), str):
            raise TokenInvalid("malformed", f"claim `{name}` is missing or not a string")
    for name in TIME_CLAIMS:
        value = claims.get(name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise TokenInvalid("malformed", f"claim `{name}` is missing or not a finite number")
    if "user_id" not in claims or not isinstance(claims["user_id"], str | None):
        raise TokenInvalid("malformed", "claim `user_id` is missing or not a string or null")
    return claims


def _check_time(claims: dict[str, Any], now_s: float, leeway_s: float) -> None:
    if now_s >= claims["exp"] + leeway_s:
        raise TokenInvalid(
            "expired",
            f"the token expired at {claims['exp']} (now {now_s:.0f}, leeway {leeway_s} s)",
        )
    if now_s + leeway_s < claims["nbf"]:
        raise TokenInvalid(
            "not_yet_valid",
            f"the token is valid from {claims['nbf']} (now {now_s:.0f}, leeway {leeway_s} s)",
        )


def _check_subject(claims: dict[str, Any], event_id: str, device_id: str | None) -> None:
    if claims["event_id"] != event_id or claims["aud"] != event_id:
        raise TokenInvalid("wrong_event", f"the token is for another event, not {event_id!r}")
    if device_id is not None and (claims["device_id"] != device_id or claims["sub"] != device_id):
        raise TokenInvalid("wrong_device", "the token was issued to another device")


class Verifier:
    """Token verification for one event with a fixed set of keys, as an origin uses it.

    The keys are loaded once. Nothing is fetched from the network: an origin that serves
    Gatekeep's JWKS loads the document itself and passes the dict.
    """

    def __init__(
        self, keys: KeySource, *, event_id: str, leeway_s: float = DEFAULT_LEEWAY_S
    ) -> None:
        self._keys = dict(collect_keys(keys))
        if not self._keys:
            raise KeyConfigError(
                "keys", "no verification keys given; pass a JWKS or at least one key"
            )
        if leeway_s < 0:
            raise KeyConfigError("leeway_s", f"must be 0 or more seconds, got {leeway_s}")
        self.event_id = event_id
        self.leeway_s = leeway_s

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    def verify(
        self, token: str | bytes, device_id: str | None = None, *, now_s: float | None = None
    ) -> dict[str, Any]:
        """Verify `token` for this verifier's event and return its claims; raise TokenInvalid."""
        return _verify(token, self._keys, self.event_id, device_id, self.leeway_s, now_s)


def _import_ed25519(field: str) -> tuple[Any, Any]:
    """Import the Ed25519 classes lazily, so HS256-only origins need no `cryptography`."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError as error:
        raise KeyConfigError(
            field, "EdDSA keys need the `cryptography` package; install `PyJWT[crypto]`"
        ) from error
    return Ed25519PublicKey, serialization
