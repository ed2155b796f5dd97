"""Summary search and the caller's own LLM key."""

from __future__ import annotations

from pydantic import BaseModel

from gateway.schemas.common import Open


class SummaryQuery(BaseModel):
    """Exactly one of ``q`` (a text) and ``objID`` (a source whose summary to match)."""

    q: str | None = None
    objID: str | None = None
    k: int | None = None
    z_min: float | None = None
    z_max: float | None = None
    classificationTypes: list[str] | None = None


class Match(Open):
    """One source near the query, with its summary and distance."""


class QueryResults(BaseModel):
    query_results: list[Match]


class LlmKey(BaseModel):
    api_key: str


class LlmKeyState(BaseModel):
    llm_key_set: bool
