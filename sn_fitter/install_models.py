"""Install the sncosmo model files sn_fitter needs offline, then check them.

    python -m sn_fitter.install_models

The files come from the PyPI package ``jax-bandflux`` (an sncosmo data directory inside the
package). It must be installed with ``--no-deps``: its declared dependencies include jax,
which sn_fitter does not use, so it cannot be an ordinary dependency in pyproject.toml.
The command is idempotent: it installs only when the files are missing.
"""

from __future__ import annotations

import subprocess
import sys

from sn_fitter.sncosmo_data import bundled_data_dir

PACKAGE, VERSION = "jax-bandflux", "1.0.0"
REQUIRED = {
    "sources": ["salt3", "salt2", "hsiao-subsampled"],
    "bands": ["ztfg", "ztfr", "sdssg", "sdssr", "sdssi", "sdssz", "bessellb", "bessellv"],
}
NOT_SHIPPED = "ztfi, sdssu and the full-resolution hsiao template (used: hsiao-subsampled)"


def install() -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        f"{PACKAGE}=={VERSION}",
    ]
    subprocess.run(command, check=True)


def check() -> list[str]:
    """Names of required sources/bands sncosmo cannot load (empty when all is well)."""
    import sncosmo

    import sn_fitter  # noqa: F401  (points SNCOSMO_DATA_DIR at the bundled files)

    missing = []
    for name in REQUIRED["sources"]:
        try:
            sncosmo.get_source(name)
        except Exception:
            missing.append(name)
    for name in REQUIRED["bands"]:
        try:
            sncosmo.get_bandpass(name)
        except Exception:
            missing.append(name)
    return missing


def main() -> int:
    if bundled_data_dir() is None:
        print(f"installing {PACKAGE}=={VERSION} (model files, --no-deps)", file=sys.stderr)
        install()
    # a fresh interpreter, so the new package and SNCOSMO_DATA_DIR are seen from the start
    probe = (
        "import sys, sn_fitter.install_models as m; bad = m.check(); "
        "print(*bad, file=sys.stderr); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"sn_fitter model files incomplete: {result.stderr.strip()}", file=sys.stderr)
        return 1
    print(
        f"sn_fitter model files ready in {bundled_data_dir()}; not available offline: "
        f"{NOT_SHIPPED}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
