"""Checking a start request's ``analysis_parameters`` and ``input_filters`` against its service.

A service declares its parameters in ``optional_analysis_parameters`` (a JSON string or an
object) in one of the two shapes SkyPortal's UI understands:

* ``{"name": ["v1", "v2"]}``: an enumerated choice;
* ``{"name": {"type": "number"|"integer"|"string"|"boolean"|"file", "required": "True",
  "description": …, "default": …}}``: a typed value.

As in SkyPortal, every parameter is optional unless its spec says ``"required": true``; an
omitted parameter is not sent and the service applies its own default. Unlike SkyPortal,
given values are checked against the choices and the types. Booleans are one value whatever
their spelling: ``true``, ``"True"`` and ``"true"`` all match a ``["True", "False"]`` choice
(and are sent as the service spelled the choice). Every failure is a :class:`ParameterError`
whose message names the parameter and starts with SkyPortal's "Invalid analysis_parameters".
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from shared.domain.ids import MAX_ID

RESERVED_PARAMETERS = frozenset({"correct_extinction"})
# Never accepted from clients: secrets are never stored with an analysis.
SECRET_PARAMETERS = frozenset({"openai_api_key"})
PARAMETER_TYPES = frozenset({"number", "integer", "string", "boolean", "file"})

# The spellings the service registry accepts for "required" (marshmallow's).
_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})
_DATA_URL = re.compile(r"^data:[^;,]*;name=[^;,]+;base64,", re.IGNORECASE)
_INSTRUMENT_ID_MAX = MAX_ID  # instruments.id is a 32-bit integer column on PostgreSQL


class ParameterError(ValueError):
    """Invalid parameters; the message is meant for the client (HTTP 400)."""


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    required: bool
    choices: tuple[Any, ...] | None = None
    type: str | None = None


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value == 1
    return isinstance(value, str) and value.strip().lower() in _TRUE


def _spec(name: str, declared: Any) -> ParameterSpec:
    if isinstance(declared, list):
        return ParameterSpec(name, required=False, choices=tuple(declared))
    if isinstance(declared, dict):
        kind = declared.get("type")
        kind = kind.strip().lower() if isinstance(kind, str) else None
        return ParameterSpec(
            name,
            required=_truthy(declared.get("required")),
            type=kind if kind in PARAMETER_TYPES else None,
        )
    return ParameterSpec(name, required=False)


def parameter_specs(optional_analysis_parameters: Any) -> dict[str, ParameterSpec]:
    """The declared parameters of a service (its column may hold a JSON string or an object)."""
    declared = optional_analysis_parameters
    if declared is None or declared == "":
        return {}
    if isinstance(declared, str):
        try:
            declared = json.loads(declared)
        except ValueError:
            raise ParameterError(
                "This analysis service's optional_analysis_parameters are not valid JSON; "
                "ask its maintainer to fix the service."
            ) from None
    if not isinstance(declared, dict):
        raise ParameterError(
            "This analysis service's optional_analysis_parameters are not a JSON object; "
            "ask its maintainer to fix the service."
        )
    return {str(name): _spec(str(name), value) for name, value in declared.items()}


def _brief(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _brief_dict(params: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k!r}: {_brief(v, 40)}" for k, v in params.items()) + "}"


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            return math.isfinite(float(value))
        except ValueError:
            return False
    return False


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer()
    if isinstance(value, str):
        try:
            int(value.strip())
        except ValueError:
            return False
        return True
    return False


def _is_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    return isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE


_TYPE_CHECKS = {
    "number": (_is_number, "a number"),
    "integer": (_is_integer, "an integer"),
    "string": (lambda v: isinstance(v, str), "a string"),
    "boolean": (_is_boolean, "a boolean (true/false)"),
    "file": (
        lambda v: isinstance(v, str) and _DATA_URL.match(v) is not None,
        "a file as a data URL (data:<mime>;name=<filename>;base64,<data>)",
    ),
}


def _boolean_meaning(value: Any) -> bool | None:
    """True/False for a JSON boolean or a "true"/"false" string in any case, else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return None


def _matching_choice(value: Any, choices: tuple[Any, ...]) -> tuple[bool, Any]:
    """(found, the choice as the service declared it) for a given value."""
    meaning = _boolean_meaning(value)
    if meaning is not None:
        for choice in choices:
            if _boolean_meaning(choice) is meaning:
                return True, choice
    if isinstance(value, str | list | dict):
        return value in choices, value
    # Numbers match by type (True is not 1), or by their string form against string choices.
    for choice in choices:
        if (type(choice) is type(value) and choice == value) or choice == str(value):
            return True, choice
    return False, value


def _checked_value(spec: ParameterSpec, value: Any) -> Any:
    """The value to send: a boolean-like choice in the service's own spelling."""
    if spec.choices is not None:
        found, value = _matching_choice(value, spec.choices)
        if not found:
            raise ParameterError(
                f"Invalid analysis_parameters: '{spec.name}' must be one of "
                f"{list(spec.choices)}, got {_brief(value)}."
            )
    if spec.type is not None:
        check, described = _TYPE_CHECKS[spec.type]
        if not check(value):
            raise ParameterError(
                f"Invalid analysis_parameters: '{spec.name}' must be {described}, "
                f"got {_brief(value)}."
            )
    return value


def validate_analysis_parameters(specs: dict[str, ParameterSpec], params: Any) -> dict[str, Any]:
    """The parameters to send, once every key and value has been checked (omitted ones stay
    omitted; boolean-like choices in the spelling the service declared)."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ParameterError("Invalid analysis_parameters: must be a JSON object.")
    unknown = sorted(set(params) - set(specs) - RESERVED_PARAMETERS)
    if unknown:
        raise ParameterError(
            f"Invalid analysis_parameters: {_brief_dict(params)}. "
            f"Unknown parameter(s): {unknown}; this service accepts {sorted(specs)}."
        )
    secret = sorted(set(params) & SECRET_PARAMETERS)
    if secret:
        raise ParameterError(
            f"Invalid analysis_parameters: '{secret[0]}' must not be sent as an analysis "
            "parameter; secrets are never stored with an analysis."
        )
    if "correct_extinction" in params and not _is_boolean(params["correct_extinction"]):
        raise ParameterError(
            "Invalid analysis_parameters: 'correct_extinction' must be a boolean (true/false)."
        )
    checked = dict(params)
    for name, spec in specs.items():
        value = params.get(name)
        if value is None:
            if spec.required:
                raise ParameterError(
                    f"Invalid analysis_parameters: missing required parameter '{name}'."
                )
            continue
        checked[name] = _checked_value(spec, value)
    return checked


def file_name_of(value: str) -> str | None:
    """The filename inside a SkyPortal file data URL (``data:<mime>;name=<file>;base64,…``)."""
    _, found, rest = value.partition(";name=")
    if not found:
        return None
    name = rest.split(";", 1)[0].split(",", 1)[0]
    return name or None


def display_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """The copy stored on the row: file data replaced by its filename, secrets dropped.

    As in SkyPortal, a string holding both ``data:`` and ``;name=``
    is a file; when no filename can be found the key is left out.
    """
    shown: dict[str, Any] = {}
    for name, value in params.items():
        if name in SECRET_PARAMETERS:
            continue
        if isinstance(value, str) and "data:" in value and ";name=" in value:
            filename = file_name_of(value)
            if filename is not None:
                shown[name] = filename
            continue
        shown[name] = value
    return shown


_FILTERS_SHAPE = '{"photometry": {"filters": ["ztfg", ...], "instruments": [1, ...]}}'


def _filter_names(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise ParameterError("Invalid input_filters: photometry.filters must be a list of strings.")
    names = [f.strip() for f in value]
    return list(dict.fromkeys(n for n in names if n))


def _instrument_id(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 <= value <= _INSTRUMENT_ID_MAX
    ):
        raise ParameterError(
            "Invalid input_filters: photometry.instruments must be a list of instrument IDs "
            f"(integers or numeric strings), got {_brief(value)}."
        )
    return value


def _instrument_ids(value: Any) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ParameterError("Invalid input_filters: photometry.instruments must be a list.")
    return list(dict.fromkeys(_instrument_id(v) for v in value))


def normalize_input_filters(raw: Any) -> dict[str, Any]:
    """``{"photometry": {"filters": [...], "instruments": [...]}}`` with names stripped and
    instrument IDs as ints (integers and numeric strings both kept; SkyPortal drops the
    integers of a mixed list). Empty lists mean "no filter" and are left out."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ParameterError(f"Invalid input_filters: must be an object like {_FILTERS_SHAPE}.")
    unknown = sorted(set(raw) - {"photometry"})
    if unknown:
        raise ParameterError(
            f"Invalid input_filters: unknown key(s) {unknown}; expected {_FILTERS_SHAPE}."
        )
    photometry = raw.get("photometry")
    if photometry is None:
        return {}
    if not isinstance(photometry, dict):
        raise ParameterError(
            f"Invalid input_filters: photometry must be an object like {_FILTERS_SHAPE}."
        )
    # instruments_by_name is written by the dispatcher; accepted (and dropped) so that a
    # previous analysis' input_filters can be sent back as they are.
    unknown = sorted(set(photometry) - {"filters", "instruments", "instruments_by_name"})
    if unknown:
        raise ParameterError(
            f"Invalid input_filters: unknown photometry key(s) {unknown}; "
            "expected 'filters' and 'instruments'."
        )
    normalized: dict[str, Any] = {}
    filters = _filter_names(photometry.get("filters"))
    instruments = _instrument_ids(photometry.get("instruments"))
    if filters:
        normalized["filters"] = filters
    if instruments:
        normalized["instruments"] = instruments
    return {"photometry": normalized} if normalized else {}
