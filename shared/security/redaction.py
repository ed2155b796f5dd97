"""Secrets skyhook sent out are replaced by ``[redacted]`` in text that came back from outside.

A service that echoes its request in an error answer (or in its callback's ``message``) would
otherwise make skyhook store and show its credentials. :func:`redact` is applied to every such
text before it is stored or logged; :func:`request_secrets` lists what one request carried.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
# Shorter values are left alone: replacing every "a" in a message would hide nothing and
# ruin the message.
MIN_SECRET_CHARS = 4
SIGNING_SECRET_PREFIX = "whsec_"
# The response hash of an echoed ``Authorization: Digest …`` header (derived from the password).
_DIGEST_RESPONSE = re.compile(r'(\bresponse=)"?[0-9a-fA-F]{32,128}"?')


def secret_forms(secret: str) -> set[str]:
    """The secret and the encodings it may come back in: URL-encoded, JSON-escaped, and the
    credential alone when the secret is ``<scheme> <credential>`` (a header value)."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    scheme, _, credential = secret.partition(" ")
    if scheme and credential and " " not in credential:
        forms |= secret_forms(credential)
    if secret.startswith(SIGNING_SECRET_PREFIX):
        forms.add(secret.removeprefix(SIGNING_SECRET_PREFIX))
    return {form for form in forms if len(form) >= MIN_SECRET_CHARS}


def redact(message: str, secrets: Iterable[str], *, cut_short: bool = False) -> str:
    """``message`` with every form of every secret replaced by ``[redacted]``.

    ``cut_short`` says the message is the start of a longer text: a secret may then have
    been cut at its end, so a tail that begins a secret is redacted too. Only then: on a
    whole message, a tail that merely looks like a secret's first characters (four random
    hex digits of an object id against a random token) is the message's own text."""
    forms = sorted({f for s in secrets if s for f in secret_forms(s)}, key=len, reverse=True)
    for form in forms:
        message = message.replace(form, REDACTED)
    if cut_short:
        message = _without_cut_tail(message, forms)
    return _DIGEST_RESPONSE.sub(rf'\g<1>"{REDACTED}"', message)


def _without_cut_tail(message: str, forms: Iterable[str]) -> str:
    for form in forms:
        for cut in range(len(form) - 1, MIN_SECRET_CHARS - 1, -1):
            if message.endswith(form[:cut]):
                message = message[:-cut] + REDACTED
                break
    return message


def basic_credentials(username: str, password: str) -> str:
    """RFC 7617 credentials (UTF-8), as ``requests.auth.HTTPBasicAuth`` sends them."""
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def request_secrets(
    authinfo: Mapping[str, Any],
    *,
    signing_secret: str | None = None,
    callback_token: str | None = None,
    others: Iterable[str] = (),
) -> frozenset[str]:
    """Every secret one request to a service carried: each ``_authinfo`` value (header
    tokens, API key, user name and password) and their Basic encoding, the signing secret,
    the callback token, and ``others`` (LLM keys added to the parameters)."""
    found = set(_strings({k: v for k, v in authinfo.items() if k != "api_key_name"}))
    username, password = authinfo.get("username"), authinfo.get("password")
    if isinstance(username, str) and isinstance(password, str):
        found.add(basic_credentials(username, password))
    found.update(s for s in (signing_secret, callback_token) if s)
    found.update(s for s in others if s)
    return frozenset(found)
