"""Generate the shared verifier test vectors: `python -m gatekeep.tokens.vectors OUTDIR`.

Writes OUTDIR/token_vectors.json. Every token comes from fixed test keys and every case fixes
`now_s`, so the file is the same on every run and its expectations never go stale. The
Python, Node and Go verifiers all run these cases and must reach the same outcome.

The keys below are public test keys. Never use them outside tests.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatekeep.model import Entry, EntryStatus
from gatekeep.tokens.keyring import Keyring, SigningKey
from gatekeep.tokens.signer import TokenSigner
from gatekeep.verify import EDDSA, HS256, MAX_TOKEN_BYTES, derive_hs256_kid

FILE_NAME = "token_vectors.json"
FORMAT_VERSION = 1

HS256_KID = "test-hs256-key"
# 64 bytes or more, so that the HS512 case also signs without a key-length warning.
HS256_SECRET = "gatekeep-test-vector-hs256-secret-not-for-production-use-only-in-tests"  # noqa: S105
ED25519_KID = "test-ed25519-key"
ED25519_SEED = hashlib.sha256(b"gatekeep test vector ed25519 seed").digest()

EVENT_ID = "concert-2025"
DEVICE_ID = "device-7f3a"
ADMITTED_AT_MS = 1_750_000_000_250
SESSION_EXPIRES_AT_MS = 1_750_000_600_750
IAT_S = ADMITTED_AT_MS // 1000
EXP_S = SESSION_EXPIRES_AT_MS // 1000
NOW_S = IAT_S + 100
LEEWAY_S = 5

_ALL_ALGORITHMS = jwt.PyJWS()


def ed25519_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(ED25519_SEED)


def vector_jwks() -> dict[str, Any]:
    """Return the vectors' verification keys: the HS256 secret as an `oct` JWK and the EdDSA key."""
    secret = _b64(HS256_SECRET.encode("utf-8"))
    eddsa = Keyring(SigningKey(kid=ED25519_KID, alg=EDDSA, key=ed25519_private_key())).jwks()
    oct_key = {"kty": "oct", "kid": HS256_KID, "alg": HS256, "k": secret, "use": "sig"}
    return {"keys": [oct_key, *eddsa["keys"]]}


def build_vectors() -> dict[str, Any]:
    """Return the whole vector document."""
    builder = _CaseBuilder()
    builder.add_valid_cases()
    builder.add_claim_check_cases()
    builder.add_signature_cases()
    builder.add_algorithm_cases()
    builder.add_structure_cases()
    builder.add_claim_format_cases()
    hs256_secret = HS256_SECRET.encode("utf-8")
    return {
        "format": FORMAT_VERSION,
        "description": "Admission-token verifier test vectors from gatekeep.tokens.vectors.",
        "max_token_bytes": MAX_TOKEN_BYTES,
        "jwks": vector_jwks(),
        "derived_kid": {"secret": HS256_SECRET, "kid": derive_hs256_kid(hs256_secret)},
        "cases": builder.cases,
    }


def _entry(**changes: Any) -> Entry:
    values: dict[str, Any] = {
        "queue_id": "q-vector-0001",
        "event_id": EVENT_ID,
        "device_id": DEVICE_ID,
        "user_id": "user-42",
        "bucket": "default",
        "status": EntryStatus.ADMITTED,
        "joined_at_ms": ADMITTED_AT_MS - 60_000,
        "last_heartbeat_ms": ADMITTED_AT_MS,
        "token_id": "tok-0001",
        "nonce": "nonce-0001",
        "admitted_at_ms": ADMITTED_AT_MS,
        "session_expires_at_ms": SESSION_EXPIRES_AT_MS,
    }
    values.update(changes)
    return Entry(**values)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _compact(header: dict[str, Any] | bytes, payload: bytes, signature: bytes) -> str:
    header_bytes = header if isinstance(header, bytes) else _json(header)
    return f"{_b64(header_bytes)}.{_b64(payload)}.{_b64(signature)}"


class _CaseBuilder:
    def __init__(self) -> None:
        self.cases: list[dict[str, Any]] = []
        self.hs256_signer = TokenSigner(Keyring.from_hs256_secret(HS256_SECRET, HS256_KID))
        eddsa_keyring = Keyring(SigningKey(kid=ED25519_KID, alg=EDDSA, key=ed25519_private_key()))
        self.eddsa_signer = TokenSigner(eddsa_keyring)
        self.claims = self.hs256_signer.claims(_entry())

    def add(
        self,
        name: str,
        description: str,
        token: str,
        *,
        reason: str | None = None,
        event_id: str = EVENT_ID,
        device_id: str | None = DEVICE_ID,
        now_s: int = NOW_S,
        claims: dict[str, Any] | None = None,
    ) -> None:
        if reason is None:
            expected: dict[str, Any] = {"valid": True, "claims": claims or self.claims}
        else:
            expected = {"valid": False, "reason": reason}
        self.cases.append(
            {
                "name": name,
                "description": description,
                "token": token,
                "event_id": event_id,
                "device_id": device_id,
                "leeway_s": LEEWAY_S,
                "now_s": now_s,
                "expected": expected,
            }
        )

    def sign_hs256(self, payload: bytes, *, kid: str = HS256_KID, alg: str = HS256) -> str:
        secret = HS256_SECRET.encode("utf-8")
        return _ALL_ALGORITHMS.encode(payload, secret, algorithm=alg, headers={"kid": kid})

    def sign_eddsa(self, payload: bytes, *, kid: str = ED25519_KID) -> str:
        key = ed25519_private_key()
        return _ALL_ALGORITHMS.encode(payload, key, algorithm=EDDSA, headers={"kid": kid})

    def add_valid_cases(self) -> None:
        entry = _entry()
        hs256_token = self.hs256_signer.issue(entry)
        self.add("valid_hs256", "HS256 token checked with its device", hs256_token)
        self.add(
            "valid_eddsa", "EdDSA token checked with its device", self.eddsa_signer.issue(entry)
        )
        self.add(
            "valid_without_device",
            "device_id null skips the device check",
            hs256_token,
            device_id=None,
        )

        anonymous = _entry(user_id=None)
        self.add(
            "valid_user_id_null",
            "user_id is null for anonymous visitors",
            self.hs256_signer.issue(anonymous),
            claims=self.hs256_signer.claims(anonymous),
        )
        self.add(
            "valid_expired_within_leeway",
            "now is 1 s before exp + leeway",
            hs256_token,
            now_s=EXP_S + LEEWAY_S - 1,
        )
        self.add(
            "valid_not_yet_valid_within_leeway",
            "now is exactly nbf - leeway",
            hs256_token,
            now_s=IAT_S - LEEWAY_S,
        )

        # A payload segment never has a length of 1 mod 4, so the kid length decides whether
        # exactly MAX_TOKEN_BYTES is reachable. The assert catches a kid that breaks it.
        pad_claims, padded = self.padded_token(MAX_TOKEN_BYTES)
        if len(padded) != MAX_TOKEN_BYTES:
            raise AssertionError(f"no padding gives a token of exactly {MAX_TOKEN_BYTES} bytes")
        self.add(
            "valid_max_size",
            f"a token of exactly {MAX_TOKEN_BYTES} bytes with an extra `pad` claim",
            padded,
            claims=pad_claims,
        )

    def padded_token(self, min_length: int) -> tuple[dict[str, Any], str]:
        """Return claims with a `pad` claim and the shortest HS256 token of `min_length` or more."""
        for pad_length in range(min_length):
            claims = {**self.claims, "pad": "x" * pad_length}
            token = self.sign_hs256(_json(claims))
            if len(token) >= min_length:
                return claims, token
        raise AssertionError(f"no padding gives a token of {min_length} bytes")

    def add_claim_check_cases(self) -> None:
        token = self.hs256_signer.issue(_entry())
        self.add(
            "expired",
            "now is exactly exp + leeway",
            token,
            reason="expired",
            now_s=EXP_S + LEEWAY_S,
        )
        self.add(
            "not_yet_valid",
            "now is 1 s before nbf - leeway",
            token,
            reason="not_yet_valid",
            now_s=IAT_S - LEEWAY_S - 1,
        )
        self.add(
            "wrong_event",
            "the token is for another event",
            token,
            reason="wrong_event",
            event_id="other-event",
        )
        self.add(
            "expired_and_wrong_event",
            "expiry is checked before the event",
            token,
            reason="expired",
            event_id="other-event",
            now_s=EXP_S + 3600,
        )
        self.add(
            "wrong_device",
            "the token is for another device",
            token,
            reason="wrong_device",
            device_id="device-other",
        )

        aud_mismatch = self.sign_hs256(_json({**self.claims, "aud": "other-event"}))
        self.add(
            "aud_differs_from_event_id",
            "signed with aud other than event_id",
            aud_mismatch,
            reason="wrong_event",
        )
        sub_mismatch = self.sign_hs256(_json({**self.claims, "sub": "device-other"}))
        self.add(
            "sub_differs_from_device_id",
            "signed with sub other than device_id",
            sub_mismatch,
            reason="wrong_device",
        )

    def add_signature_cases(self) -> None:
        for alg, signer in ((HS256, self.hs256_signer), (EDDSA, self.eddsa_signer)):
            header, _, signature = signer.issue(_entry()).split(".")
            forged_payload = _b64(
                _json({**self.claims, "device_id": "device-other", "sub": "device-other"})
            )
            self.add(
                f"tampered_payload_{alg.lower()}",
                "payload changed to another device, signature kept",
                f"{header}.{forged_payload}.{signature}",
                reason="bad_signature",
            )

            _, payload, _ = signer.issue(_entry()).split(".")
            raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
            raw[0] ^= 0x01
            self.add(
                f"tampered_signature_{alg.lower()}",
                "first signature byte changed",
                f"{header}.{payload}.{_b64(bytes(raw))}",
                reason="bad_signature",
            )

        self.add(
            "unknown_kid",
            "signed with the test secret under a kid that no key has",
            self.sign_hs256(_json(self.claims), kid="retired-key"),
            reason="unknown_kid",
        )

    def add_algorithm_cases(self) -> None:
        payload = _json(self.claims)
        for alg in ("none", "NONE"):
            header = {"alg": alg, "kid": HS256_KID, "typ": "JWT"}
            self.add(
                f"alg_{alg}",
                f"unsigned token with alg {alg!r}",
                _compact(header, payload, b""),
                reason="alg_not_allowed",
            )
        self.add(
            "alg_hs512",
            "HS512 with the right secret, but only HS256 and EdDSA are allowed",
            self.sign_hs256(payload, alg="HS512"),
            reason="alg_not_allowed",
        )

        # Classic confusion: a verifier that takes `alg` from the header would check this HMAC
        # with the EdDSA key's public bytes, which are public.
        public_key = ed25519_private_key().public_key()
        raw_public = public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        pem_public = public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for form, secret in (("raw", raw_public), ("pem", pem_public)):
            header = {"alg": HS256, "kid": ED25519_KID, "typ": "JWT"}
            signing_input = f"{_b64(_json(header))}.{_b64(payload)}".encode("ascii")
            mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
            self.add(
                f"alg_switched_hs256_with_{form}_public_key",
                f"HS256 under the EdDSA kid, keyed with the {form} Ed25519 public key",
                _compact(header, payload, mac),
                reason="alg_not_allowed",
            )
        self.add(
            "alg_switched_eddsa_on_hs256_kid",
            "EdDSA signature under the HS256 kid",
            self.sign_eddsa(payload, kid=HS256_KID),
            reason="alg_not_allowed",
        )

    def add_structure_cases(self) -> None:
        token = self.hs256_signer.issue(_entry())
        header, payload, signature = token.split(".")
        _, oversized = self.padded_token(MAX_TOKEN_BYTES + 1)
        self.add(
            "too_large",
            f"a validly signed token of {len(oversized)} bytes",
            oversized,
            reason="too_large",
        )
        self.add("empty", "empty string", "", reason="malformed")
        self.add(
            "two_segments", "signature segment missing", f"{header}.{payload}", reason="malformed"
        )
        self.add("four_segments", "an extra segment", f"{token}.{signature}", reason="malformed")
        self.add(
            "base64_padding",
            "header segment with = padding",
            f"{header}==.{payload}.{signature}",
            reason="malformed",
        )
        self.add(
            "base64_standard_alphabet",
            "a + character in the signature",
            f"{header}.{payload}.+{signature[1:]}",
            reason="malformed",
        )
        self.add(
            "base64_bad_length",
            "signature of 45 characters (1 mod 4)",
            f"{token}AA",
            reason="malformed",
        )

        # The last of 43 characters carries 2 spare bits. A lenient decoder ignores them, so
        # setting one gives the same bytes, and only a strict verifier rejects the string.
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        last = alphabet.index(signature[-1])
        non_canonical = signature[:-1] + alphabet[last ^ 0x01]
        self.add(
            "base64_non_canonical",
            "signature whose last character sets a spare bit",
            f"{header}.{payload}.{non_canonical}",
            reason="malformed",
        )
        self.add(
            "non_ascii",
            "a non-ASCII character in the payload segment",
            f"{header}.{payload}é.{signature}",
            reason="malformed",
        )

        header_cases = {
            "header_not_json": b"not json",
            "header_json_array": b'["HS256"]',
            "header_missing_kid": _json({"alg": HS256, "typ": "JWT"}),
            "header_kid_not_string": _json({"alg": HS256, "kid": 7, "typ": "JWT"}),
            "header_crit": _json(
                {"alg": HS256, "crit": ["exp"], "exp": 1, "kid": HS256_KID, "typ": "JWT"}
            ),
            "header_utf8_bom": b"\xef\xbb\xbf"
            + _json({"alg": HS256, "kid": HS256_KID, "typ": "JWT"}),
            "header_invalid_utf8": b'{"alg":"HS256","kid":"test-hs256-key","x":"\xff"}',
        }
        for name, header_bytes in header_cases.items():
            signing_input = f"{_b64(header_bytes)}.{payload}".encode("ascii")
            mac = hmac.new(HS256_SECRET.encode("utf-8"), signing_input, hashlib.sha256).digest()
            self.add(
                name,
                "validly signed, but the header is invalid",
                f"{signing_input.decode()}.{_b64(mac)}",
                reason="malformed",
            )

    def add_claim_format_cases(self) -> None:
        without_exp = {name: value for name, value in self.claims.items() if name != "exp"}
        without_user = {name: value for name, value in self.claims.items() if name != "user_id"}
        payload_cases: dict[str, bytes] = {
            "payload_not_json": b"not json",
            "payload_json_array": b"[1,2,3]",
            "payload_utf8_bom": b"\xef\xbb\xbf" + _json(self.claims),
            "claim_exp_missing": _json(without_exp),
            "claim_exp_string": _json({**self.claims, "exp": str(EXP_S)}),
            "claim_exp_boolean": _json({**self.claims, "exp": True}),
            "claim_exp_out_of_range": _json(self.claims).replace(str(EXP_S).encode(), b"1e400"),
            "claim_exp_infinity": _json(self.claims).replace(str(EXP_S).encode(), b"Infinity"),
            "claim_event_id_number": _json({**self.claims, "event_id": 7}),
            "claim_user_id_missing": _json(without_user),
        }
        for name, payload in payload_cases.items():
            self.add(
                name,
                "validly signed, but the claims are invalid",
                self.sign_hs256(payload),
                reason="malformed",
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gatekeep.tokens.vectors", description=__doc__)
    parser.add_argument("outdir", type=Path, help=f"directory to write {FILE_NAME} into")
    args = parser.parse_args(argv)

    args.outdir.mkdir(parents=True, exist_ok=True)
    path = args.outdir / FILE_NAME
    path.write_text(
        json.dumps(build_vectors(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
