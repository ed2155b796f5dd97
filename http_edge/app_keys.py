"""Typed keys of what a platform service's application holds: each handler reads the one thing
it uses (the session factory, a setting, the secret box…), never the whole set of resources."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.bus.base import Bus
from shared.db.session import Sessions
from shared.domain.artifacts import ArtifactStore
from shared.runtime.resources import Resources
from shared.runtime.settings import Settings
from shared.security.secrets import CallbackTokens, SecretBox
from shared.security.urlpolicy import URLPolicy

ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", Sessions)
SETTINGS = web.AppKey("settings", Settings)
SECRET_BOX = web.AppKey("secret_box", SecretBox)
CALLBACK_TOKENS = web.AppKey("callback_tokens", CallbackTokens)
URL_POLICY = web.AppKey("url_policy", URLPolicy)
ARTIFACTS = web.AppKey("artifacts", ArtifactStore)
BUS = web.AppKey("bus", Bus)


def provide(app: web.Application, resources: Resources) -> None:
    """Put each resource under its own key (the app factories call this once)."""
    app[ENGINE] = resources.engine
    app[SESSIONS] = resources.sessions
    app[SETTINGS] = resources.settings
    app[SECRET_BOX] = resources.secret_box
    app[CALLBACK_TOKENS] = resources.callback_tokens
    app[URL_POLICY] = resources.url_policy
    app[ARTIFACTS] = resources.artifacts
    app[BUS] = resources.bus
