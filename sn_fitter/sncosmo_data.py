"""Make sncosmo's model and bandpass files available without network access.

sncosmo downloads most templates (salt3, ztf bands, ...) on first use. The `jax-bandflux`
package ships a copy of the files we need as an sncosmo data directory; pointing
``SNCOSMO_DATA_DIR`` at it lets sncosmo find them offline. This module must run before
sncosmo resolves its data directory, so ``sn_fitter/__init__.py`` calls it at import time.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

ENV_VAR = "SNCOSMO_DATA_DIR"
MODEL_PACKAGE = "jax_supernovae"  # installed by the distribution `jax-bandflux`
MODEL_DIR_NAME = "sncosmo-modelfiles"


def bundled_data_dir() -> Path | None:
    """The sncosmo data directory shipped inside jax-bandflux, if it is installed.

    ``find_spec`` locates the package without importing it (importing it needs jax).
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / MODEL_DIR_NAME
        if candidate.is_dir():
            return candidate
    return None


def configure_data_dir() -> Path | None:
    """Set ``SNCOSMO_DATA_DIR`` to the bundled files unless the operator already set it."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured)
    bundled = bundled_data_dir()
    if bundled is not None:
        os.environ[ENV_VAR] = str(bundled)
    return bundled
