"""The secrets of the request a callback answers, to redact from the callback's ``message``."""

from __future__ import annotations

import logging

from shared.analysis_lifecycle import Callee
from shared.db.models import AnalysisService, User
from shared.redaction import redact, request_secrets
from shared.resources import Resources
from shared.service_registry import decrypt_authinfo, decrypt_signing_secret
from summary_service.keys import user_llm_key

log = logging.getLogger("skyhook.webhook")


async def sent_secrets(resources: Resources, analysis: Callee, token: str) -> frozenset[str]:
    """What the dispatcher sent with this analysis' request: the service's credentials and
    signing secret, the callback token, the author's and the site's LLM keys."""
    site_key = resources.settings.llm_api_key
    others = [site_key.get_secret_value()] if site_key else []
    authinfo: dict[str, object] = {}
    signing_secret = None
    async with resources.sessions() as session:
        service = await session.get(AnalysisService, analysis.analysis_service_id)
        author = await session.get(User, analysis.author_id)
        if author is not None:
            others.append(user_llm_key(resources.secret_box, author) or "")
        if service is not None:
            try:
                authinfo = decrypt_authinfo(resources.secret_box, service)
                signing_secret = decrypt_signing_secret(resources.secret_box, service)
            except ValueError:
                log.warning("analysis %s: the service's secrets cannot be decrypted", analysis.id)
    return request_secrets(
        authinfo, signing_secret=signing_secret, callback_token=token, others=others
    )


async def redacted_message(resources: Resources, analysis: Callee, token: str, message: str) -> str:
    """The callback's message with every secret of its request replaced by ``[redacted]``."""
    if not message:
        return message
    return redact(message, await sent_secrets(resources, analysis, token))
