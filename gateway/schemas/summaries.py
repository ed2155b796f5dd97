"""Summary search and the caller's own LLM key."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, ValidationInfo, model_validator

from gateway.schemas.common import Open
from gateway.schemas.validation import WhenMissing
from http_edge.web import ApiError, finite

MAX_QUERY_CHARS = 10_000
MAX_KEY_CHARS = 500
DEFAULT_K = 5


def _one_of_q_and_obj_id(body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    q, obj_id = body.get("q"), body.get("objID")
    if q is None and obj_id is None:
        raise ValueError('Missing one of the required: "q" or "objID"')
    if q is not None and obj_id is not None:
        raise ValueError('Cannot specify both "q" and "objID"')
    return body


def _obj_id(value: Any) -> Any:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError('Invalid "objID": must be a source id')
    return value


def _k(value: Any) -> int:
    if value is None:
        return DEFAULT_K
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("k must be an integer, 1<=k<=100")
    if not 1 <= value <= 100:
        raise ValueError("k must be 1<=k<=100")
    return value


def _number(value: Any, name: str) -> float | None:
    try:
        return finite(value, name, allow_none=True)
    except ApiError as exc:
        raise ValueError(exc.message) from None


def _z_min(value: Any) -> float | None:
    return _number(value, "z_min")


def _z_max(value: Any, info: ValidationInfo) -> float | None:
    z_max = _number(value, "z_max")
    z_min = info.data.get("z_min")
    if z_min is not None and z_max is not None and z_min > z_max:
        raise ValueError("z_min must be <= z_max")
    return z_max


def _classes(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(c, str) and c.strip() for c in value):
        raise ValueError("Invalid classificationTypes: must be a list of classification names")
    return [c.strip() for c in value] or None


def _text_query(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError('Invalid "q": must be a non-empty string')
    if len(value) > MAX_QUERY_CHARS:
        raise ValueError(f'Invalid "q": must be at most {MAX_QUERY_CHARS} characters')
    return value.strip()


class SummaryQuery(BaseModel):
    """Exactly one of ``q`` (a text) and ``objID`` (a source whose summary to match). Fields
    are in the order they are checked; ``q`` comes out stripped, ``classificationTypes`` as
    stripped names (none: no filter), an absent ``k`` as 5."""

    objID: Annotated[str | None, BeforeValidator(_obj_id)] = None
    k: Annotated[int | None, BeforeValidator(_k)] = Field(default=None, validate_default=True)
    z_min: Annotated[float | None, BeforeValidator(_z_min)] = None
    z_max: Annotated[float | None, BeforeValidator(_z_max)] = None
    classificationTypes: Annotated[list[str] | None, BeforeValidator(_classes)] = None
    q: Annotated[str | None, BeforeValidator(_text_query)] = None

    @model_validator(mode="before")
    @classmethod
    def _one_of_q_and_obj_id(cls, body: Any) -> Any:
        return _one_of_q_and_obj_id(body)


class Match(Open):
    """One source near the query, with its summary and distance."""


class QueryResults(BaseModel):
    query_results: list[Match]


API_KEY_REFUSAL = "Invalid api_key: must be a non-empty string"


def _api_key(key: Any) -> str:
    if not isinstance(key, str) or not key.strip():
        raise ValueError(API_KEY_REFUSAL)
    key = key.strip()
    if len(key) > MAX_KEY_CHARS or any(c.isspace() for c in key):
        raise ValueError(
            f"Invalid api_key: must be at most {MAX_KEY_CHARS} characters, without spaces"
        )
    return key


class LlmKey(BaseModel):
    # Stripped.
    api_key: Annotated[str, WhenMissing(API_KEY_REFUSAL), BeforeValidator(_api_key)]


class LlmKeyState(BaseModel):
    llm_key_set: bool
