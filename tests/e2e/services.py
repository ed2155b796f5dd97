"""What the end-to-end tests' analysis services send back: real result files and webhook
bodies. The service itself is ``tests.support.fake_service.FakeService``."""

from __future__ import annotations

import base64
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from tests.support.fake_service import WebhookBody

# --- what a service sends back -----------------------------------------------------------------


@dataclass(frozen=True)
class Products:
    """Real result files, made the way a Python analysis service makes them."""

    png: bytes
    netcdf: bytes
    results: dict[str, Any]  # the plain-JSON view of the results
    joblib: bytes  # joblib.dump of the same results, with numpy arrays


def _plot_png() -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3, 2), dpi=60)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    mjd = np.linspace(59000, 59040, 30)
    axes.plot(mjd, 100 * np.exp(-(((mjd - 59015) / 8) ** 2)), "k-")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _posterior_netcdf() -> bytes:
    """An ArviZ-style file: a ``posterior`` group with (chain, draw) variables."""
    import xarray as xr

    rng = np.random.default_rng(7)
    posterior = xr.Dataset(
        {
            "t0": (("chain", "draw"), rng.normal(59015.0, 0.5, size=(2, 200))),
            "amplitude": (("chain", "draw"), rng.normal(100.0, 4.0, size=(2, 200))),
            "x1": (("chain", "draw"), rng.normal(0.3, 0.1, size=(2, 200))),
        }
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "posterior.nc"
        posterior.to_netcdf(path, engine="h5netcdf", group="posterior")
        return path.read_bytes()


def make_products() -> Products:
    """CPU work (matplotlib, HDF5): call it in a thread, once."""
    chi2 = np.array([12.5, 11.75, 11.5])
    covariance = np.array([[0.25, 0.01], [0.01, 16.0]])
    raw = {
        "model": "gaussian",
        "best_fit": {"t0": np.float64(59015.0), "amplitude": np.float64(100.0)},
        "chi2_trace": chi2,
        "covariance": covariance,
        "n_iterations": np.int64(3),
    }
    buffer = io.BytesIO()
    joblib.dump(raw, buffer)
    plain = {
        "model": "gaussian",
        "best_fit": {"t0": 59015.0, "amplitude": 100.0},
        "chi2_trace": chi2.tolist(),
        "covariance": covariance.tolist(),
        "n_iterations": 3,
    }
    return Products(_plot_png(), _posterior_netcdf(), plain, buffer.getvalue())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def success_body(products: Products, results_format: str = "joblib") -> WebhookBody:
    results: dict[str, Any] = (
        {"format": "joblib", "data": b64(products.joblib)}
        if results_format == "joblib"
        else {"format": "json", "data": products.results}
    )
    return {
        "status": "success",
        "message": "fit converged",
        "analysis": {
            "plots": [{"format": "png", "data": b64(products.png)}],
            "inference_data": {"format": "netcdf4", "data": b64(products.netcdf)},
            "results": results,
            "model_name": "gaussian",
            "n_detections": 4,
        },
    }


def simple_success(message: str = "done") -> WebhookBody:
    return {
        "status": "success",
        "message": message,
        "analysis": {"results": {"format": "json", "data": {"answer": 42}}},
    }


def failure_body(message: str) -> WebhookBody:
    return {"status": "failure", "message": message, "analysis": {}}


class PlantMarker:
    """Unpickling this runs ``open(path, "w")``: it creates the marker file. Any code that
    unpickles third-party bytes with plain pickle or joblib.load would do exactly that."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def malicious_joblib(marker: Path) -> bytes:
    buffer = io.BytesIO()
    joblib.dump({"best_fit": np.arange(3.0), "payload": PlantMarker(marker)}, buffer)
    return buffer.getvalue()
