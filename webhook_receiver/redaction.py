"""The secrets of the request a callback answers, to redact from the callback's ``message``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import SecretStr

from shared.domain.analysis_lifecycle import Callee
from shared.domain.llm_keys import user_llm_key
from shared.domain.service_registry import decrypt_authinfo, decrypt_signing_secret
from shared.security.redaction import redact, request_secrets
from shared.security.secrets import SecretBox

log = logging.getLogger("skyhook.webhook")


@dataclass  # not frozen: service_registry.StoredSecrets declares settable attributes
class _ServiceSecrets:
    id: int
    authinfo_ciphertext: str | None
    signing_secret_ciphertext: str | None


@dataclass(frozen=True)
class _AuthorSecrets:
    id: int
    secrets_ciphertext: str | None


@dataclass(frozen=True)
class Redactor:
    """Decrypts what was sent with a request, to redact it from the callback's message."""

    secret_box: SecretBox
    site_llm_key: SecretStr | None

    def sent_secrets(self, analysis: Callee, token: str) -> frozenset[str]:
        """What the dispatcher sent with this analysis' request: the service's credentials
        and signing secret, the callback token, the author's and the site's LLM keys
        (decrypted from the ciphertexts read with the row)."""
        others = [self.site_llm_key.get_secret_value()] if self.site_llm_key else []
        author = _AuthorSecrets(analysis.author_id, analysis.author_secrets_ciphertext)
        others.append(user_llm_key(self.secret_box, author) or "")
        service = _ServiceSecrets(
            analysis.analysis_service_id,
            analysis.authinfo_ciphertext,
            analysis.signing_secret_ciphertext,
        )
        authinfo: dict[str, object] = {}
        signing_secret = None
        try:
            authinfo = decrypt_authinfo(self.secret_box, service)
            signing_secret = decrypt_signing_secret(self.secret_box, service)
        except ValueError:
            log.warning("analysis %s: the service's secrets cannot be decrypted", analysis.id)
        return request_secrets(
            authinfo, signing_secret=signing_secret, callback_token=token, others=others
        )

    def redacted_message(self, analysis: Callee, token: str, message: str) -> str:
        """The callback's message with every secret of its request replaced by
        ``[redacted]``."""
        if not message:
            return message
        return redact(message, self.sent_secrets(analysis, token))
