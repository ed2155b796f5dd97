"""Request bodies checked through their models, with one message per failure.

Strict mode: JSON gives each value one type, so ``"1"`` is not an integer and ``1`` not a
boolean. The message names the first field at fault, as the hand-written checks do.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from shared.domain.errors import InvalidInput

ModelT = TypeVar("ModelT", bound=BaseModel)

_WORDING = {
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "list_type": "must be a list",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "extra_forbidden": "is not a field of this request",
}


def _describe(error: ErrorDetails) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "body"
    if error["type"] == "missing":
        return f"Missing required field: {field}"
    reason = _WORDING.get(error["type"], error["msg"])
    return f"Invalid {field}: {reason}"


def validated(model: type[ModelT], body: dict[str, Any]) -> ModelT:
    """``body`` as ``model``, or :class:`InvalidInput` (a 400) naming the first bad field."""
    try:
        return model.model_validate(body, strict=True)
    except ValidationError as exc:
        raise InvalidInput(_describe(exc.errors()[0])) from None
