"""The service's analysis parameters: what an operator registers and how values are read.

SkyPortal forms send every value as a string ("True", "0.2", "1000"); JSON clients may send
real booleans and numbers. Both are accepted; anything else is an :class:`OptionsError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DEFAULT_SOURCE = "salt3"
Z_PRIOR_CHOICES = ("auto", "survey", "flat")
MAX_SECONDS = 600.0

# The dict an operator registers as the service's `optional_analysis_parameters`
# (SkyPortal's two shapes: a list is an enum dropdown, a dict describes a typed field).
OPTIONAL_ANALYSIS_PARAMETERS: dict[str, Any] = {
    "source": ["salt3", "salt2", "hsiao", "salt3-nir", "nugent-sn2p", "nugent-sn2n", "v19-1998bw"],
    "fix_z": ["False", "True"],
    "z_prior": {
        "type": "string",
        "default": "auto",
        "description": "redshift prior: auto (the source's redshift +- its error if it has "
        "one, else survey), survey (ZTF-like, flat 0.02-0.12) or flat (on z_min-z_max)",
    },
    "z_min": {
        "type": "number",
        "default": 0.001,
        "description": "lower redshift bound when z is free",
    },
    "z_max": {
        "type": "number",
        "default": 0.3,
        "description": "upper redshift bound when z is free (clipped to the model's coverage)",
    },
    "num_samples": {
        "type": "number",
        "default": 1000,
        "description": "posterior draws kept per chain",
    },
    "num_chains": {"type": "number", "default": 4, "description": "independent chains"},
    "seed": {"type": "number", "description": "random seed (reproducible posteriors)"},
    "max_seconds": {
        "type": "number",
        "default": 30,
        "description": "time budget for extending the chains until R-hat and ESS meet targets",
    },
}

TRUE_STRINGS = {"true", "t", "yes", "y", "1"}
FALSE_STRINGS = {"false", "f", "no", "n", "0", ""}


class OptionsError(ValueError):
    """A parameter value that cannot be used; the message names the parameter."""


@dataclass(frozen=True)
class FitOptions:
    source: str = DEFAULT_SOURCE
    fix_z: bool = False
    z_prior: str = "auto"  # auto: the source's redshift +- error if any, else "survey"
    z_min: float = 0.001
    z_max: float = 0.3
    num_samples: int = 1000
    num_chains: int = 4
    num_warmup: int = 500
    seed: int | None = None
    max_seconds: float = 30.0


def parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in TRUE_STRINGS:
            return True
        if text in FALSE_STRINGS:
            return False
    raise OptionsError(f"{name} must be true or false, got {value!r}")


def parse_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise OptionsError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OptionsError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise OptionsError(f"{name} must be finite, got {value!r}")
    return number


def parse_int(name: str, value: Any, *, low: int, high: int) -> int:
    number = parse_float(name, value)
    if number != int(number):
        raise OptionsError(f"{name} must be a whole number, got {value!r}")
    if not low <= number <= high:
        raise OptionsError(f"{name} must be between {low} and {high}, got {value!r}")
    return int(number)


def _present(params: dict[str, Any], key: str) -> bool:
    value = params.get(key)
    return value is not None and not (isinstance(value, str) and value.strip() == "")


def parse_options(params: dict[str, Any] | None) -> FitOptions:
    """Read ``inputs.analysis_parameters``; unknown keys are ignored (the platform checks them)."""
    params = params or {}
    if not isinstance(params, dict):
        raise OptionsError("analysis_parameters must be an object")
    values: dict[str, Any] = {}
    if _present(params, "source"):
        source = params["source"]
        if not isinstance(source, str):
            raise OptionsError(f"source must be an sncosmo model name, got {source!r}")
        values["source"] = source.strip()
    if "fix_z" in params and params["fix_z"] is not None:
        values["fix_z"] = parse_bool("fix_z", params["fix_z"])
    if _present(params, "z_prior"):
        choice = str(params["z_prior"]).strip().lower()
        if choice not in Z_PRIOR_CHOICES:
            allowed = ", ".join(Z_PRIOR_CHOICES)
            raise OptionsError(f"z_prior must be one of {allowed}, got {choice!r}")
        values["z_prior"] = choice
    if _present(params, "max_seconds"):
        seconds = parse_float("max_seconds", params["max_seconds"])
        if not 1.0 <= seconds <= MAX_SECONDS:
            raise OptionsError(f"max_seconds must be between 1 and {MAX_SECONDS:g}, got {seconds}")
        values["max_seconds"] = seconds
    for key in ("z_min", "z_max"):
        if _present(params, key):
            values[key] = parse_float(key, params[key])
    if _present(params, "num_samples"):
        values["num_samples"] = parse_int("num_samples", params["num_samples"], low=100, high=20000)
    if _present(params, "num_chains"):
        values["num_chains"] = parse_int("num_chains", params["num_chains"], low=2, high=16)
    if _present(params, "num_warmup"):
        values["num_warmup"] = parse_int("num_warmup", params["num_warmup"], low=100, high=20000)
    if _present(params, "seed"):
        values["seed"] = parse_int("seed", params["seed"], low=0, high=2**32 - 1)
    options = FitOptions(**values)
    if not 0.0 <= options.z_min < options.z_max:
        raise OptionsError(
            f"need 0 <= z_min < z_max, got z_min={options.z_min}, z_max={options.z_max}"
        )
    return options
