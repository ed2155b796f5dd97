"""Authenticated encryption of stored secrets, derived callback tokens and API token hashing."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Callable

import pytest

from shared.security.secrets import CallbackTokens, SecretBox, hash_token, new_api_token

# SkyPortal's webhook route only accepts lowercase UUIDv4 tokens.
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_round_trip_of_bytes_and_json() -> None:
    box = SecretBox("key-one")
    sealed = box.encrypt(b"hunter2", b"service:1")
    assert b"hunter2" not in sealed.encode() and "hunter2" not in sealed
    assert box.decrypt(sealed, b"service:1") == b"hunter2"
    value = {"username": "ada", "password": "pässwörd", "n": [1, 2]}
    assert box.decrypt_json(box.encrypt_json(value)) == value


def test_each_encryption_uses_a_fresh_nonce() -> None:
    box = SecretBox("key-one")
    first, second = box.encrypt(b"same"), box.encrypt(b"same")
    assert first != second
    assert box.decrypt(first) == box.decrypt(second) == b"same"


def _flip_byte(token: str, index: int) -> str:
    version, fingerprint, body = token.split(":", 2)
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[index] ^= 0x01
    return f"{version}:{fingerprint}:{base64.urlsafe_b64encode(bytes(raw)).decode()}"


@pytest.mark.parametrize("index", [0, 11, 12, -1])  # nonce, ciphertext start, tag end
def test_tampering_is_detected(index: int) -> None:
    box = SecretBox("key-one")
    sealed = box.encrypt(b"the secret")
    with pytest.raises(ValueError, match="failed authentication"):
        box.decrypt(_flip_byte(sealed, index))


def test_associated_data_must_match() -> None:
    box = SecretBox("key-one")
    sealed = box.encrypt_json({"api_key": "k"}, b"analysis_service:1:authinfo")
    with pytest.raises(ValueError, match="failed authentication"):
        box.decrypt_json(sealed, b"analysis_service:2:authinfo")
    with pytest.raises(ValueError, match="failed authentication"):
        box.decrypt_json(sealed)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: "v2" + t[2:],
        lambda t: t.split(":", 1)[1],
        lambda t: "not a ciphertext",
        lambda t: "",
        lambda t: t[: t.rindex(":") + 1] + "%%%",
        lambda t: t[: t.rindex(":") + 5],
    ],
    ids=["version", "no-version", "garbage", "empty", "bad-base64", "truncated"],
)
def test_malformed_ciphertexts_raise_value_error(mangle: Callable[[str], str]) -> None:
    box = SecretBox("key-one")
    with pytest.raises(ValueError):
        box.decrypt(mangle(box.encrypt(b"x")))


def test_wrong_key_fails() -> None:
    sealed = SecretBox("key-one").encrypt(b"secret")
    with pytest.raises(ValueError, match="unknown key"):
        SecretBox("key-two").decrypt(sealed)
    # Even with a forged fingerprint the other key cannot open it.
    other = SecretBox("key-two")
    fingerprint = other.encrypt(b"").split(":")[1]
    version, _, body = sealed.split(":", 2)
    with pytest.raises(ValueError, match="failed authentication"):
        other.decrypt(f"{version}:{fingerprint}:{body}")


def test_rotation_keeps_old_ciphertexts_readable_and_writes_with_the_new_key() -> None:
    old = SecretBox("old-key")
    written_before = old.encrypt_json({"password": "p"}, b"ad")
    rotated = SecretBox("new-key", ["old-key"])
    assert rotated.decrypt_json(written_before, b"ad") == {"password": "p"}
    written_after = rotated.encrypt(b"fresh")
    assert written_after.split(":")[1] != written_before.split(":")[1]
    with pytest.raises(ValueError, match="unknown key"):
        old.decrypt(written_after)
    assert SecretBox("new-key").decrypt(written_after) == b"fresh"
    with pytest.raises(ValueError, match="unknown key"):
        SecretBox("new-key").decrypt(written_before)
    # Several generations of previous keys are all accepted.
    older = SecretBox("oldest-key").encrypt(b"ancient")
    assert SecretBox("new-key", ["old-key", "oldest-key"]).decrypt(older) == b"ancient"


def test_callback_tokens_are_deterministic_uuid4_shaped_and_keyed() -> None:
    tokens = CallbackTokens("key-one")
    unique_id = str(uuid.uuid4())
    token = tokens.token_for(unique_id)
    assert token == tokens.token_for(unique_id) == CallbackTokens("key-one").token_for(unique_id)
    assert UUID4.match(token), token
    assert uuid.UUID(token).version == 4
    others = {tokens.token_for(str(uuid.uuid4())) for _ in range(200)}
    assert token not in others and len(others) == 200
    assert all(UUID4.match(t) for t in others)
    assert CallbackTokens("key-two").token_for(unique_id) != token
    assert token != unique_id


def test_api_tokens_are_random_and_stored_as_sha256() -> None:
    tokens = {new_api_token() for _ in range(100)}
    assert len(tokens) == 100 and all(len(t) >= 40 for t in tokens)
    token = tokens.pop()
    assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
    assert hash_token(token) != hash_token(token + "x") and token not in hash_token(token)
