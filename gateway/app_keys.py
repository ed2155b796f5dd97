"""Typed keys of what the gateway's application holds besides the shared resources."""

from __future__ import annotations

from aiohttp import web

from shared.domain.analysis_lifecycle import AnalysisCreator

ANALYSIS_CREATOR = web.AppKey("analysis_creator", AnalysisCreator)
