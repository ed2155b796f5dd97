"""Typed keys of what a platform service's application holds."""

from __future__ import annotations

from aiohttp import web

from shared.runtime.resources import Resources

RESOURCES = web.AppKey("resources", Resources)
