"""The work a fitting worker process does for one request: fit, build products, encode JSON.

Everything here runs in a worker process (ProcessPoolExecutor), never on the event loop.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from sn_fitter.fit import FitFailure, fit_lightcurve
from sn_fitter.inputs import InputError, LightCurve, Redshift, parse_photometry, parse_redshift
from sn_fitter.model import ModelError
from sn_fitter.options import FitOptions, OptionsError, parse_options
from sn_fitter.products import failure_body, success_body

log = logging.getLogger("sn_fitter")


@dataclass(frozen=True)
class FitJob:
    lightcurve: LightCurve
    redshift: Redshift
    options: FitOptions
    title: str | None


def build_job(payload: dict[str, Any]) -> FitJob:
    """Read a request's inputs; raises InputError/OptionsError with a message for a 400."""
    inputs = payload["inputs"]
    if not isinstance(inputs, dict):
        raise InputError("inputs must be an object")
    if "photometry" not in inputs:
        raise InputError("missing required key inputs.photometry")
    try:
        options = parse_options(inputs.get("analysis_parameters"))
    except OptionsError as exc:
        raise InputError(f"invalid analysis_parameters: {exc}") from None
    try:
        lightcurve = parse_photometry(inputs["photometry"])
    except InputError as exc:
        raise InputError(f"could not parse photometry: {exc}") from None
    try:
        redshift = parse_redshift(inputs.get("redshift"))
    except InputError as exc:
        raise InputError(f"could not parse redshift: {exc}") from None
    resource = payload.get("resource_id")
    return FitJob(lightcurve, redshift, options, str(resource) if resource is not None else None)


def encode(body: dict[str, Any]) -> bytes:
    """Plain stdlib JSON; NaN is refused (products.finite() already replaced it)."""
    return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()


def run_job(job: FitJob) -> bytes:
    """Fit and return the webhook body as JSON bytes; failures become failure bodies."""
    try:
        result = fit_lightcurve(job.lightcurve, job.redshift, job.options)
    except (FitFailure, ModelError) as exc:
        return encode(failure_body(str(exc)))
    except Exception as exc:  # a bug or numerical breakdown: report it rather than go silent
        log.exception("fit failed")
        return encode(failure_body(f"problem running the model: {exc}"))
    try:
        return encode(success_body(result, job.options.fix_z, job.title))
    except Exception as exc:
        log.exception("building the results failed")
        return encode(failure_body(f"problem preparing the results: {exc}"))


def warm_up() -> None:
    """Worker initializer: load sncosmo and the default salt3/ZTF tables before requests."""
    from sn_fitter.demo import demo_lightcurve
    from sn_fitter.inputs import parse_photometry as parse

    try:
        lc = parse(demo_lightcurve(seed=1).photometry_csv())
        fit_lightcurve(
            lc,
            Redshift(None, None, None),
            FitOptions(num_samples=100, num_warmup=100, num_chains=2, seed=0),
        )
    except Exception:  # warm-up is an optimisation; a real request will report real errors
        log.warning("sn_fitter worker warm-up failed", exc_info=True)


__all__ = ["FitJob", "build_job", "encode", "parse_photometry", "parse_redshift", "run_job"]
