"""Secrets: API tokens (stored hashed), authenticated encryption, derived callback tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import uuid
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_CIPHER_VERSION = "v1"


def new_api_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """API and callback tokens are high-entropy, so a plain SHA-256 is the right look-up key."""
    return hashlib.sha256(token.encode()).hexdigest()


def _derive_key(secret_key: str, purpose: bytes) -> bytes:
    return hmac.new(secret_key.encode(), b"skyhook:" + purpose, hashlib.sha256).digest()


class SecretBox:
    """AES-256-GCM with a random nonce, keyed from ``SKYHOOK_SECRET_KEY``.

    Ciphertexts carry a key fingerprint, so data written under a previous key can still be
    read while the key is rotated (``SKYHOOK_PREVIOUS_SECRET_KEYS``).
    """

    def __init__(self, secret_key: str, previous_keys: list[str] | None = None) -> None:
        keys = [secret_key, *(previous_keys or [])]
        self._keys = {self._fingerprint(k): _derive_key(k, b"secretbox") for k in keys}
        self._current = self._fingerprint(secret_key)

    @staticmethod
    def _fingerprint(secret_key: str) -> str:
        return _derive_key(secret_key, b"fingerprint").hex()[:8]

    def encrypt(self, plaintext: bytes, associated_data: bytes = b"") -> str:
        nonce = os.urandom(12)
        sealed = AESGCM(self._keys[self._current]).encrypt(nonce, plaintext, associated_data)
        body = base64.urlsafe_b64encode(nonce + sealed).decode()
        return f"{_CIPHER_VERSION}:{self._current}:{body}"

    def decrypt(self, token: str, associated_data: bytes = b"") -> bytes:
        try:
            version, fingerprint, body = token.split(":", 2)
            key = self._keys[fingerprint]
            raw = base64.urlsafe_b64decode(body)
        except (ValueError, KeyError) as exc:
            raise ValueError("secret was written with an unknown key or format") from exc
        if version != _CIPHER_VERSION:
            raise ValueError("secret was written with an unknown format")
        try:
            return AESGCM(key).decrypt(raw[:12], raw[12:], associated_data)
        except InvalidTag as exc:
            raise ValueError("secret failed authentication (tampered or wrong key)") from exc

    def encrypt_json(self, value: Any, associated_data: bytes = b"") -> str:
        return self.encrypt(json.dumps(value).encode(), associated_data)

    def decrypt_json(self, token: str, associated_data: bytes = b"") -> Any:
        return json.loads(self.decrypt(token, associated_data))


class CallbackTokens:
    """Webhook tokens derived from an analysis' ``unique_id``: nothing secret is stored.

    Tokens are shaped as lowercase UUIDv4 so that SkyPortal-era tooling that matches the
    callback URL keeps working.
    """

    def __init__(self, secret_key: str) -> None:
        self._key = _derive_key(secret_key, b"callback-token")

    def token_for(self, unique_id: str) -> str:
        digest = hmac.new(self._key, unique_id.encode(), hashlib.sha256).digest()[:16]
        return str(uuid.UUID(bytes=digest, version=4))
