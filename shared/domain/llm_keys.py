"""A user's own LLM API key: stored encrypted, never returned, sent only at dispatch time.

The key lives in ``users.secrets_ciphertext`` (a JSON object sealed with the SecretBox, bound
to the user's id). It is never copied into an analysis: the dispatcher calls
:func:`summary_secrets_for` while sending a summary analysis and adds the result (the user's
key, else the site key) to the outbound body only, after the provenance copy (``inputs.json``)
was stored without it. The
parameter name is SkyPortal's ``openai_api_key``, so SkyPortal's summarizer reads it too.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from shared.db.models import User
from shared.security.secrets import SecretBox

log = logging.getLogger("skyhook.summary_service.keys")

LLM_KEY = "llm_api_key"
SUMMARY_KEY_PARAMETER = "openai_api_key"


def _associated_data(user_id: int) -> bytes:
    return f"users/{user_id}/secrets".encode()


class UserSecrets(Protocol):
    """What decrypting a user's secrets needs from a ``User`` row."""

    @property
    def id(self) -> int: ...
    @property
    def secrets_ciphertext(self) -> str | None: ...


def user_secrets(box: SecretBox, user: UserSecrets) -> dict[str, Any]:
    """The user's stored secrets; raises ValueError when they cannot be decrypted."""
    if not user.secrets_ciphertext:
        return {}
    value = box.decrypt_json(user.secrets_ciphertext, _associated_data(user.id))
    return value if isinstance(value, dict) else {}


def set_user_secret(box: SecretBox, user: User, name: str, value: str | None) -> None:
    """Store (or, with None, remove) one secret of the user, keeping the others."""
    try:
        secrets = user_secrets(box, user)
    except ValueError:
        log.warning("user %d: stored secrets unreadable (secret key changed?); replaced", user.id)
        secrets = {}
    if value is None:
        secrets.pop(name, None)
    else:
        secrets[name] = value
    user.secrets_ciphertext = (
        box.encrypt_json(secrets, _associated_data(user.id)) if secrets else None
    )


def user_llm_key(box: SecretBox, user: UserSecrets) -> str | None:
    try:
        key = user_secrets(box, user).get(LLM_KEY)
    except ValueError:
        log.warning("user %d: stored LLM key unreadable (secret key changed?)", user.id)
        return None
    return key if isinstance(key, str) and key else None


class SummaryService(Protocol):
    @property
    def is_summary(self) -> bool: ...


def summary_secrets_for(
    box: SecretBox, author: UserSecrets, service: SummaryService, site_key: str | None
) -> dict[str, str]:
    """Secret analysis parameters the dispatcher adds to a request at send time, as SkyPortal
    does for summary services: the author's own LLM key, else the site key
    (``SKYHOOK_LLM_API_KEY``). Nothing for other services, nor when there is no key."""
    if not service.is_summary:
        return {}
    key = user_llm_key(box, author) or site_key
    return {SUMMARY_KEY_PARAMETER: key} if key else {}
