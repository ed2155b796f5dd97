"""Request bodies checked through their models, with one message per failure.

Strict mode: JSON gives each value one type, so ``"1"`` is not an integer and ``1`` not a
boolean. The message names the first field at fault, as the hand-written checks do. Fields are
checked in the order the model declares them, so a model lists its fields in the order the
handler used to check them.

A validator that raises ``ValueError`` words its own refusal: its message is the 400's text,
as it is. A required field may carry :class:`WhenMissing` to word its absence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import ErrorDetails

from http_edge.web import ApiError
from shared.domain.errors import InvalidInput

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")

_WORDING = {
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "list_type": "must be a list",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "extra_forbidden": "is not a field of this request",
}


@dataclass(frozen=True)
class WhenMissing:
    """Field metadata: the message when this required field is absent."""

    message: str


def _missing_message(model: type[BaseModel], error: ErrorDetails) -> str | None:
    loc = error["loc"]
    field = model.model_fields.get(str(loc[0])) if len(loc) == 1 else None
    if field is None:
        return None
    return next((m.message for m in field.metadata if isinstance(m, WhenMissing)), None)


def _describe(model: type[BaseModel], error: ErrorDetails) -> str:
    if error["type"] == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    field = ".".join(str(part) for part in error["loc"]) or "body"
    if error["type"] == "missing":
        return _missing_message(model, error) or f"Missing required field: {field}"
    reason = _WORDING.get(error["type"], error["msg"])
    return f"Invalid {field}: {reason}"


def validated(model: type[ModelT], body: dict[str, Any]) -> ModelT:
    """``body`` as ``model``, or :class:`InvalidInput` (a 400) naming the first bad field."""
    try:
        return model.model_validate(body, strict=True)
    except ValidationError as exc:
        raise InvalidInput(_describe(model, exc.errors()[0])) from None


def checked_by(check: Callable[[Any], Any], *refusals: type[Exception]) -> BeforeValidator:
    """A field validator running an existing check: what it returns is the field's value, and
    its refusal (one of ``refusals``) is the 400's text as it is."""

    def run(value: Any) -> Any:
        try:
            return check(value)
        except refusals as exc:
            raise ValueError(str(exc)) from None

    return BeforeValidator(run)


def must_be_boolean(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, bool):
        raise ValueError(f"Invalid {info.field_name}: must be a boolean")
    return value


# A JSON boolean, refused as "Invalid <field>: must be a boolean" (null too).
Boolean = Annotated[bool, BeforeValidator(must_be_boolean)]


FieldCheck = Callable[[dict[str, Any], str], Any]


def field_check(check: FieldCheck) -> BeforeValidator:
    """A field validator running a hand-written check of one body field, ``check(body,
    name)`` (e.g. ``gateway.source_access.text_field``), with that check's wording."""

    def run(value: Any, info: ValidationInfo) -> Any:
        name = info.field_name or ""
        try:
            return check({name: value}, name)
        except ApiError as exc:
            raise ValueError(exc.message) from None

    return BeforeValidator(run)


def _as_sent(value: Any, _: ValidatorFunctionWrapHandler) -> Any:
    return value


# Documents a field the handler checks itself, later, once it has consulted the database
# (e.g. group_ids, refused in the same breath as "no such group"): the model passes it on.
CheckedLater = WrapValidator(_as_sent)
