"""Admission tokens: issuing, the keyring and its key file, verification and the shared vectors."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatekeep.model import Entry, EntryStatus
from gatekeep.tokens import (
    KeyConfigError,
    Keyring,
    SigningKey,
    TokenInvalid,
    TokenSigner,
    Verifier,
    generate_key_file,
    verify_token,
)
from gatekeep.tokens import vectors as vector_module
from gatekeep.verify import (
    MAX_TOKEN_BYTES,
    derive_hs256_kid,
    hs256_key,
    key_from_jwk,
    keys_from_jwks,
)

SECRET = "test-token-secret-0123456789abcdefghijklmnopqrstuvwxyz"
EVENT_ID = "launch-day"
DEVICE_ID = "device-1"
ADMITTED_AT_MS = 1_760_000_000_999
SESSION_EXPIRES_AT_MS = 1_760_000_600_999
NOW_S = 1_760_000_010
VECTORS_FILE = Path(__file__).parent / "vectors" / vector_module.FILE_NAME
BASE64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def admitted_entry(**changes: Any) -> Entry:
    values: dict[str, Any] = {
        "queue_id": "q-0123456789abcdef",
        "event_id": EVENT_ID,
        "device_id": DEVICE_ID,
        "user_id": "user-9",
        "bucket": "default",
        "status": EntryStatus.ADMITTED,
        "joined_at_ms": ADMITTED_AT_MS - 30_000,
        "last_heartbeat_ms": ADMITTED_AT_MS,
        "token_id": "tok-abc",
        "nonce": "nonce-xyz",
        "admitted_at_ms": ADMITTED_AT_MS,
        "session_expires_at_ms": SESSION_EXPIRES_AT_MS,
    }
    values.update(changes)
    return Entry(**values)


def eddsa_keyring(kid: str = "ed-1") -> Keyring:
    return Keyring(SigningKey(kid=kid, alg="EdDSA", key=Ed25519PrivateKey.generate()))


def private_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def decode_segment(segment: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return decoded


def reason_of(token: Any, keys: Any, **kwargs: Any) -> str:
    kwargs.setdefault("event_id", EVENT_ID)
    kwargs.setdefault("now_s", NOW_S)
    with pytest.raises(TokenInvalid) as caught:
        verify_token(token, keys, **kwargs)
    return caught.value.reason


# Issuing


def test_issue_verifies_with_pyjwt() -> None:
    token = TokenSigner(Keyring.from_hs256_secret(SECRET)).issue(admitted_entry())

    claims = jwt.decode(
        token,
        SECRET,
        algorithms=["HS256"],
        audience=EVENT_ID,
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )

    assert claims["aud"] == EVENT_ID
    assert claims["sub"] == DEVICE_ID


def test_issue_header_fields() -> None:
    keyring = Keyring.from_hs256_secret(SECRET, kid="hs-main")
    header = jwt.get_unverified_header(TokenSigner(keyring).issue(admitted_entry()))

    assert header == {"alg": "HS256", "kid": "hs-main", "typ": "JWT"}


def test_issue_claims_from_entry() -> None:
    signer = TokenSigner(Keyring.from_hs256_secret(SECRET), issuer="gatekeep-eu")
    claims = decode_segment(signer.issue(admitted_entry()).split(".")[1])

    assert claims == {
        "iss": "gatekeep-eu",
        "aud": EVENT_ID,
        "sub": DEVICE_ID,
        "event_id": EVENT_ID,
        "device_id": DEVICE_ID,
        "user_id": "user-9",
        "iat": ADMITTED_AT_MS // 1000,
        "nbf": ADMITTED_AT_MS // 1000,
        "exp": SESSION_EXPIRES_AT_MS // 1000,
        "jti": "tok-abc",
        "nonce": "nonce-xyz",
    }


def test_issue_expiry_not_after_session() -> None:
    claims = TokenSigner(Keyring.from_hs256_secret(SECRET)).claims(admitted_entry())

    assert claims["exp"] * 1000 <= SESSION_EXPIRES_AT_MS


def test_issue_issuer_override() -> None:
    signer = TokenSigner(Keyring.from_hs256_secret(SECRET))
    claims = decode_segment(signer.issue(admitted_entry(), issuer="other").split(".")[1])

    assert claims["iss"] == "other"


def test_issue_user_id_null() -> None:
    token = TokenSigner(Keyring.from_hs256_secret(SECRET)).issue(admitted_entry(user_id=None))

    assert decode_segment(token.split(".")[1])["user_id"] is None


@pytest.mark.parametrize("alg", ["HS256", "EdDSA"])
def test_issue_deterministic(alg: str) -> None:
    keyring = Keyring.from_hs256_secret(SECRET) if alg == "HS256" else eddsa_keyring()
    first = TokenSigner(keyring, cache_size=0).issue(admitted_entry())
    second = TokenSigner(keyring, cache_size=0).issue(admitted_entry())

    assert first == second


def test_issue_cache_follows_entry_changes() -> None:
    signer = TokenSigner(Keyring.from_hs256_secret(SECRET))
    entry = admitted_entry()
    first = signer.issue(entry)
    extended = signer.issue(replace(entry, session_expires_at_ms=SESSION_EXPIRES_AT_MS + 60_000))

    assert signer.issue(entry) == first
    assert extended != first
    assert decode_segment(extended.split(".")[1])["exp"] == (SESSION_EXPIRES_AT_MS + 60_000) // 1000


@pytest.mark.parametrize("status", [EntryStatus.WAITING, EntryStatus.EXPIRED, EntryStatus.LEFT])
def test_issue_rejects_entry_not_admitted(status: EntryStatus) -> None:
    signer = TokenSigner(Keyring.from_hs256_secret(SECRET))

    with pytest.raises(ValueError, match="only admitted entries get tokens"):
        signer.issue(admitted_entry(status=status))


def test_issue_rejects_admitted_without_times() -> None:
    signer = TokenSigner(Keyring.from_hs256_secret(SECRET))

    with pytest.raises(ValueError, match="no admission or expiry time"):
        signer.issue(admitted_entry(session_expires_at_ms=None))


# Verification


@pytest.mark.parametrize("alg", ["HS256", "EdDSA"])
def test_verify_returns_claims(alg: str) -> None:
    keyring = Keyring.from_hs256_secret(SECRET) if alg == "HS256" else eddsa_keyring()
    signer = TokenSigner(keyring)
    token = signer.issue(admitted_entry())

    claims = verify_token(token, keyring, event_id=EVENT_ID, device_id=DEVICE_ID, now_s=NOW_S)

    assert claims == signer.claims(admitted_entry())


@pytest.mark.parametrize("alg", ["HS256", "EdDSA"])
def test_verify_rejects_every_single_character_change(alg: str) -> None:
    keyring = Keyring.from_hs256_secret(SECRET) if alg == "HS256" else eddsa_keyring()
    token = TokenSigner(keyring).issue(admitted_entry())
    verify_token(token, keyring, event_id=EVENT_ID, now_s=NOW_S)

    accepted = []
    for position, original in enumerate(token):
        for replacement in BASE64URL_ALPHABET + ".=+/ ":
            if replacement == original:
                continue
            changed = token[:position] + replacement + token[position + 1 :]
            try:
                verify_token(changed, keyring, event_id=EVENT_ID, now_s=NOW_S)
            except TokenInvalid:
                continue
            accepted.append((position, replacement))

    assert accepted == []


def test_pyjwt_rejects_every_single_character_change() -> None:
    token = TokenSigner(Keyring.from_hs256_secret(SECRET)).issue(admitted_entry())
    options: Any = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}

    accepted = []
    for position, original in enumerate(token):
        replacement = "A" if original != "A" else "B"
        changed = token[:position] + replacement + token[position + 1 :]
        try:
            jwt.decode(changed, SECRET, algorithms=["HS256"], audience=EVENT_ID, options=options)
        except jwt.InvalidTokenError:
            continue
        accepted.append(position)

    assert accepted == []


def test_verify_leeway_default_five_seconds() -> None:
    keyring = Keyring.from_hs256_secret(SECRET)
    token = TokenSigner(keyring).issue(admitted_entry())
    exp_s = SESSION_EXPIRES_AT_MS // 1000

    verify_token(token, keyring, event_id=EVENT_ID, now_s=exp_s + 4)
    assert reason_of(token, keyring, now_s=exp_s + 5) == "expired"


def test_verify_leeway_zero() -> None:
    keyring = Keyring.from_hs256_secret(SECRET)
    token = TokenSigner(keyring).issue(admitted_entry())
    nbf_s = ADMITTED_AT_MS // 1000

    verify_token(token, keyring, event_id=EVENT_ID, now_s=nbf_s, leeway_s=0)
    assert reason_of(token, keyring, now_s=nbf_s - 1, leeway_s=0) == "not_yet_valid"


def test_verify_uses_system_clock_by_default() -> None:
    keyring = Keyring.from_hs256_secret(SECRET)
    token = TokenSigner(keyring).issue(admitted_entry())

    with pytest.raises(TokenInvalid) as caught:
        verify_token(token, keyring, event_id=EVENT_ID)

    assert caught.value.reason == "expired"


def test_verify_size_checked_before_parsing() -> None:
    keyring = Keyring.from_hs256_secret(SECRET)

    assert reason_of("!" * (MAX_TOKEN_BYTES + 1), keyring) == "too_large"
    assert reason_of(b"!" * (MAX_TOKEN_BYTES + 1), keyring) == "too_large"
    assert reason_of("é" * (MAX_TOKEN_BYTES // 2 + 1), keyring) == "too_large"


def test_verify_rejects_non_string_token() -> None:
    assert reason_of(12345, Keyring.from_hs256_secret(SECRET)) == "malformed"


def test_verify_accepts_bytes_token() -> None:
    keyring = Keyring.from_hs256_secret(SECRET)
    token = TokenSigner(keyring).issue(admitted_entry())

    claims = verify_token(token.encode("ascii"), keyring, event_id=EVENT_ID, now_s=NOW_S)

    assert claims["jti"] == "tok-abc"


def test_verify_other_secret_is_bad_signature() -> None:
    token = TokenSigner(Keyring.from_hs256_secret(SECRET, kid="k")).issue(admitted_entry())
    other = Keyring.from_hs256_secret("another-secret-0123456789abcdefghijklmnop", kid="k")

    assert reason_of(token, other) == "bad_signature"


def test_verify_key_sources_agree() -> None:
    keyring = eddsa_keyring()
    token = TokenSigner(keyring).issue(admitted_entry())
    sources: list[Any] = [
        keyring,
        keyring.jwks(),
        keys_from_jwks(keyring.jwks()),
        list(keyring.verification_keys().values()),
        Verifier(keyring.jwks(), event_id=EVENT_ID)._keys,
    ]

    for source in sources:
        assert verify_token(token, source, event_id=EVENT_ID, now_s=NOW_S)["jti"] == "tok-abc"


def test_verifier_binds_event_and_leeway() -> None:
    keyring = Keyring.from_hs256_secret(SECRET)
    token = TokenSigner(keyring).issue(admitted_entry())
    verifier = Verifier([hs256_key(SECRET)], event_id=EVENT_ID, leeway_s=0)

    assert verifier.verify(token, DEVICE_ID, now_s=NOW_S)["sub"] == DEVICE_ID
    with pytest.raises(TokenInvalid, match="expired"):
        verifier.verify(token, now_s=SESSION_EXPIRES_AT_MS // 1000)
    with pytest.raises(TokenInvalid, match="wrong_event"):
        Verifier([hs256_key(SECRET)], event_id="other").verify(token, now_s=NOW_S)


def test_verifier_without_keys_rejected() -> None:
    with pytest.raises(KeyConfigError, match="no verification keys"):
        Verifier({"keys": []}, event_id=EVENT_ID)


def test_verifier_negative_leeway_rejected() -> None:
    with pytest.raises(KeyConfigError, match="leeway_s"):
        Verifier([hs256_key(SECRET)], event_id=EVENT_ID, leeway_s=-1)


# Keyring


def test_keyring_rotation_old_key_still_verifies(tmp_path: Path) -> None:
    old_secret = "old-secret-0123456789abcdefghijklmnopqrstuv"
    new_key = Ed25519PrivateKey.generate()
    old_keyring = Keyring.from_hs256_secret(old_secret, kid="hs-2024")
    old_token = TokenSigner(old_keyring).issue(admitted_entry())
    key_file = tmp_path / "keys.toml"
    key_file.write_text(
        'signing_kid = "ed-2025"\n\n'
        f'[[keys]]\nkid = "ed-2025"\nalg = "EdDSA"\n'
        f'private_key = """\n{private_pem(new_key)}"""\n\n'
        f'[[keys]]\nkid = "hs-2024"\nalg = "HS256"\nsecret = "{old_secret}"\n'
    )

    rotated = Keyring.from_config(None, str(key_file))
    new_token = TokenSigner(rotated).issue(admitted_entry())

    assert verify_token(old_token, rotated, event_id=EVENT_ID, now_s=NOW_S)["jti"] == "tok-abc"
    assert jwt.get_unverified_header(new_token)["kid"] == "ed-2025"
    assert verify_token(new_token, rotated, event_id=EVENT_ID, now_s=NOW_S)["jti"] == "tok-abc"
    assert reason_of(new_token, old_keyring) == "unknown_kid"


def test_keyring_verification_keys_signing_first() -> None:
    old = hs256_key("old-secret-0123456789abcdefghijklmnopqrstuv", kid="old")
    keyring = Keyring(SigningKey(kid="new", alg="HS256", key=SECRET.encode()), [old])

    assert list(keyring.verification_keys()) == ["new", "old"]


def test_keyring_duplicate_kid_rejected() -> None:
    duplicate = hs256_key("old-secret-0123456789abcdefghijklmnopqrstuv", kid="same")

    with pytest.raises(KeyConfigError, match="appears twice"):
        Keyring(SigningKey(kid="same", alg="HS256", key=SECRET.encode()), [duplicate])


def test_keyring_jwks_content() -> None:
    signing = Ed25519PrivateKey.generate()
    retired = Ed25519PrivateKey.generate()
    keyring = Keyring.from_key_file_text(
        'signing_kid = "ed-new"\n'
        f'[[keys]]\nkid = "ed-new"\nalg = "EdDSA"\nprivate_key = """\n{private_pem(signing)}"""\n'
        f'[[keys]]\nkid = "ed-old"\nalg = "EdDSA"\npublic_key = """\n{public_pem(retired)}"""\n'
        f'[[keys]]\nkid = "hs-old"\nalg = "HS256"\nsecret = "{SECRET}"\n'
    )
    raw = signing.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )

    jwks = keyring.jwks()

    assert [key["kid"] for key in jwks["keys"]] == ["ed-new", "ed-old"]
    assert jwks["keys"][0] == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii"),
        "kid": "ed-new",
        "alg": "EdDSA",
        "use": "sig",
    }
    assert SECRET not in json.dumps(jwks)


def test_keyring_jwks_empty_for_hs256() -> None:
    assert Keyring.from_hs256_secret(SECRET).jwks() == {"keys": []}


def test_keyring_jwks_verifies_tokens() -> None:
    keyring = eddsa_keyring()
    token = TokenSigner(keyring).issue(admitted_entry())
    verifier = Verifier(json.loads(json.dumps(keyring.jwks())), event_id=EVENT_ID)

    assert verifier.verify(token, DEVICE_ID, now_s=NOW_S)["jti"] == "tok-abc"


def test_keyring_generate_hs256_random() -> None:
    first = Keyring.generate_hs256()
    second = Keyring.generate_hs256()

    assert first.signing_key.kid != second.signing_key.kid
    assert first.signing_key.key != second.signing_key.key
    assert isinstance(first.signing_key.key, bytes)
    assert len(first.signing_key.key) >= 32
    assert first.signing_key.alg == "HS256"


def test_from_config_secret_derives_kid() -> None:
    keyring = Keyring.from_config(SECRET, None)

    assert keyring.signing_key.kid == derive_hs256_kid(SECRET.encode())
    assert keyring.signing_key.kid == hs256_key(SECRET).kid


def test_from_config_secret_kid_override() -> None:
    assert Keyring.from_config(SECRET, None, secret_kid="main").signing_key.kid == "main"


def test_from_config_needs_one_source(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.toml"
    key_file.write_text(generate_key_file("HS256"))

    with pytest.raises(KeyConfigError, match="both a token secret and a key file"):
        Keyring.from_config(SECRET, str(key_file))
    with pytest.raises(KeyConfigError, match="no token secret or key file"):
        Keyring.from_config(None, None)


def test_from_config_short_secret() -> None:
    with pytest.raises(KeyConfigError) as caught:
        Keyring.from_config("short", None)

    assert caught.value.field == "secret"
    assert "at least 32" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_from_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError) as caught:
        Keyring.from_config(None, str(tmp_path / "absent.toml"))

    assert caught.value.field == "keys_file"
    assert "absent.toml" in str(caught.value)


def test_from_config_error_names_file_and_field(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.toml"
    key_file.write_text('signing_kid = "a"\n[[keys]]\nkid = "a"\nalg = "HS256"\nsecret = "short"\n')

    with pytest.raises(KeyConfigError) as caught:
        Keyring.from_config(None, str(key_file))

    assert caught.value.field == f"{key_file}: keys[0].secret"


@pytest.mark.parametrize("alg", ["HS256", "EdDSA"])
def test_generate_key_file_round_trip(alg: str) -> None:
    text = generate_key_file(alg, kid="fresh-key")
    keyring = Keyring.from_key_file_text(text)
    token = TokenSigner(keyring).issue(admitted_entry())

    assert keyring.signing_key.kid == "fresh-key"
    assert keyring.signing_key.alg == alg
    assert verify_token(token, keyring, event_id=EVENT_ID, now_s=NOW_S)["jti"] == "tok-abc"


def test_generate_key_file_unknown_alg() -> None:
    with pytest.raises(KeyConfigError, match="unsupported algorithm"):
        generate_key_file("RS256")


def _ed_block(kid: str, field: str = "private_key") -> str:
    key = Ed25519PrivateKey.generate()
    pem = private_pem(key) if field == "private_key" else public_pem(key)
    return f'[[keys]]\nkid = "{kid}"\nalg = "EdDSA"\n{field} = """\n{pem}"""\n'


INVALID_KEY_FILES = [
    ("not toml", "= nonsense", "keys_file"),
    ("unknown top field", f'signing_kid = "a"\nextra = 1\n{_ed_block("a")}', "extra"),
    ("no keys", 'signing_kid = "a"\n', "keys"),
    ("no signing kid", _ed_block("a"), "signing_kid"),
    ("signing kid absent", f'signing_kid = "b"\n{_ed_block("a")}', "signing_kid"),
    (
        "signing key public only",
        f'signing_kid = "a"\n{_ed_block("a", "public_key")}',
        "keys[0].public_key",
    ),
    ("bad kid", f'signing_kid = "a b"\n{_ed_block("a b")}', "keys[0].kid"),
    ("duplicate kid", f'signing_kid = "a"\n{_ed_block("a")}{_ed_block("a")}', "keys[1].kid"),
    (
        "unknown alg",
        'signing_kid = "a"\n[[keys]]\nkid = "a"\nalg = "RS256"\nsecret = "x"\n',
        "keys[0].alg",
    ),
    ("unknown key field", f'signing_kid = "a"\n{_ed_block("a")}use = "sig"\n', "keys[0].use"),
    (
        "hs256 no secret",
        'signing_kid = "a"\n[[keys]]\nkid = "a"\nalg = "HS256"\n',
        "keys[0].secret",
    ),
    (
        "hs256 short",
        'signing_kid = "a"\n[[keys]]\nkid = "a"\nalg = "HS256"\nsecret = "short"\n',
        "keys[0].secret",
    ),
    (
        "hs256 with pem",
        'signing_kid = "a"\n[[keys]]\nkid = "a"\nalg = "HS256"\nsecret = "' + "s" * 40 + '"\n'
        'private_key = "x"\n',
        "keys[0].private_key",
    ),
    (
        "hs256 secret is a public key",
        'signing_kid = "a"\n[[keys]]\nkid = "a"\nalg = "HS256"\nsecret = """\n'
        + public_pem(Ed25519PrivateKey.generate())
        + '"""\n',
        "keys[0].secret",
    ),
    (
        "eddsa with secret",
        f'signing_kid = "a"\n{_ed_block("a")}secret = "{"s" * 40}"\n',
        "keys[0].secret",
    ),
    (
        "eddsa both keys",
        'signing_kid = "a"\n[[keys]]\nkid = "a"\nalg = "EdDSA"\n'
        'private_key = "x"\npublic_key = "y"\n',
        "keys[0]",
    ),
    (
        "eddsa bad pem",
        'signing_kid = "a"\n[[keys]]\nkid = "a"\nalg = "EdDSA"\nprivate_key = "not a pem"\n',
        "keys[0].private_key",
    ),
    (
        "eddsa bad public pem",
        f'signing_kid = "a"\n{_ed_block("a")}'
        '[[keys]]\nkid = "b"\nalg = "EdDSA"\npublic_key = "no"\n',
        "keys[1].public_key",
    ),
]


@pytest.mark.parametrize(
    ("text", "field"),
    [(text, field) for _, text, field in INVALID_KEY_FILES],
    ids=[name for name, _, _ in INVALID_KEY_FILES],
)
def test_key_file_invalid(text: str, field: str) -> None:
    with pytest.raises(KeyConfigError) as caught:
        Keyring.from_key_file_text(text)

    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


def test_key_file_rejects_rsa_private_key() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode("ascii")
    )
    text = (
        f'signing_kid = "a"\n[[keys]]\nkid = "a"\nalg = "EdDSA"\nprivate_key = """\n{rsa_pem}"""\n'
    )

    with pytest.raises(KeyConfigError, match="expected an Ed25519 private key"):
        Keyring.from_key_file_text(text)


def test_key_file_rejects_encrypted_private_key() -> None:
    encrypted = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
        .decode("ascii")
    )
    text = (
        'signing_kid = "a"\n[[keys]]\nkid = "a"\nalg = "EdDSA"\n'
        f'private_key = """\n{encrypted}"""\n'
    )

    with pytest.raises(KeyConfigError, match="encrypted private keys are not supported"):
        Keyring.from_key_file_text(text)


# JWK loading


def test_jwk_with_private_part_rejected() -> None:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "A" * 43, "d": "B" * 43, "kid": "k"}

    with pytest.raises(KeyConfigError, match="private key"):
        key_from_jwk(jwk)


@pytest.mark.parametrize(
    ("jwk", "field"),
    [
        ({"kty": "RSA", "kid": "k"}, "jwk.kty"),
        ({"kty": "OKP", "crv": "X25519", "x": "A" * 43, "kid": "k"}, "jwk.crv"),
        ({"kty": "OKP", "crv": "Ed25519", "x": "A" * 42, "kid": "k"}, "jwk.x"),
        ({"kty": "OKP", "crv": "Ed25519", "x": "A" * 43, "kid": "k", "alg": "ES256"}, "jwk.alg"),
        ({"kty": "OKP", "crv": "Ed25519", "x": "A" * 43, "kid": "k", "use": "enc"}, "jwk.use"),
        ({"kty": "oct", "k": "A" * 43, "kid": "k"}, "jwk.alg"),
        ({"kty": "oct", "k": "A" * 20, "kid": "k", "alg": "HS256"}, "jwk.k"),
        ({"kty": "oct", "k": "A" * 43, "alg": "HS256"}, "jwk.kid"),
    ],
)
def test_jwk_invalid(jwk: dict[str, Any], field: str) -> None:
    with pytest.raises(KeyConfigError) as caught:
        key_from_jwk(jwk)

    assert caught.value.field == field


# Shared vectors


def load_vectors() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
    return loaded


def outcome(case: dict[str, Any], keys: Any) -> dict[str, Any]:
    try:
        claims = verify_token(
            case["token"],
            keys,
            event_id=case["event_id"],
            device_id=case["device_id"],
            leeway_s=case["leeway_s"],
            now_s=case["now_s"],
        )
    except TokenInvalid as error:
        return {"valid": False, "reason": error.reason}
    return {"valid": True, "claims": claims}


VECTORS = load_vectors()


@pytest.mark.parametrize("case", VECTORS["cases"], ids=[case["name"] for case in VECTORS["cases"]])
def test_vector(case: dict[str, Any]) -> None:
    assert outcome(case, keys_from_jwks(VECTORS["jwks"])) == case["expected"]


def test_vectors_cover_every_reason() -> None:
    reasons = {case["expected"].get("reason") for case in VECTORS["cases"]}

    assert reasons == {
        None,
        "malformed",
        "bad_signature",
        "unknown_kid",
        "alg_not_allowed",
        "expired",
        "not_yet_valid",
        "wrong_event",
        "wrong_device",
        "too_large",
    }


def test_vectors_derived_kid() -> None:
    derived = VECTORS["derived_kid"]

    assert derive_hs256_kid(derived["secret"].encode("utf-8")) == derived["kid"]


def test_vectors_regenerate_same_outcomes(tmp_path: Path) -> None:
    assert vector_module.main([str(tmp_path)]) == 0
    regenerated = json.loads((tmp_path / vector_module.FILE_NAME).read_text(encoding="utf-8"))
    keys = keys_from_jwks(regenerated["jwks"])

    names = [case["name"] for case in regenerated["cases"]]
    assert names == [case["name"] for case in VECTORS["cases"]]
    for case, committed in zip(regenerated["cases"], VECTORS["cases"], strict=True):
        assert outcome(case, keys) == committed["expected"], case["name"]


def test_vectors_regenerate_identical_file(tmp_path: Path) -> None:
    vector_module.main([str(tmp_path)])

    regenerated = (tmp_path / vector_module.FILE_NAME).read_text(encoding="utf-8")
    assert regenerated == VECTORS_FILE.read_text(encoding="utf-8")
