"""Benchmark the periodogram on 2,000 points over 3 years with the default grid.

    .venv/bin/python bench/periodogram.py [--repeats 5] [--flexible]

Prints the CPU time (process time: every thread counted) and wall time, median over the
repeats, of our full answer (grid, power, peaks, false-alarm probabilities, downsampling) for
the multiband and per-band methods, beside the raw astropy calls on the same grid, and the
load average (the machine is shared). Target: under 1 s for the default (multiband) answer.
``--flexible`` also times astropy's LombScargleMultiband matrix method on the same grid, for
the record (tens of seconds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astropy.timeseries import LombScargle, LombScargleMultiband

from gateway import periodogram as pg
from tests.support.lightcurves import light_curve, rr_lyrae

TRUE_PERIOD = 0.61234


def timed(work: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    cpu, wall, result = [], [], None
    for _ in range(repeats):
        started_cpu, started_wall = time.process_time(), time.perf_counter()
        result = work()
        cpu.append(time.process_time() - started_cpu)
        wall.append(time.perf_counter() - started_wall)
    return statistics.median(cpu), statistics.median(wall), result


def raw_per_band(curve: pg.LightCurve, grid: pg.Grid) -> list[np.ndarray]:
    frequency = grid.frequency
    return [
        LombScargle(curve.mjd[m], curve.mag[m], curve.magerr[m]).power(
            frequency, method="fast", assume_regular_frequency=True
        )
        for m in (curve.band == b for b in ("ztfg", "ztfr"))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--flexible", action="store_true")
    args = parser.parse_args()

    # Four seasons, the last one partly: a baseline just over three years.
    curve = light_curve(np.random.default_rng(7), TRUE_PERIOD, rr_lyrae, years=3.35, n_points=2000)
    grid = pg.frequency_grid(curve.baseline, pg.Options())
    print(f"load average before: {os.getloadavg()}")
    print(
        f"{curve.mjd.size} points over {curve.baseline / 365.25:.2f} years, default grid: "
        f"{grid.n} frequencies, periods {1 / grid.f_max:.3f}-{1 / grid.f0:.0f} d"
    )
    frequency = grid.frequency
    rows = [
        ("ours: multiband (default)", lambda: pg.periodogram(curve, pg.Options())),
        ("ours: ls, per band", lambda: pg.periodogram(curve, pg.Options(method="ls"))),
        ("raw astropy LombScargle, per band", lambda: raw_per_band(curve, grid)),
        (
            "raw astropy LombScargle, all points as one band",
            lambda: LombScargle(curve.mjd, curve.mag, curve.magerr).power(
                frequency, method="fast", assume_regular_frequency=True
            ),
        ),
    ]
    if args.flexible:
        model = LombScargleMultiband(
            curve.mjd, curve.mag, curve.band, curve.magerr, nterms_base=0, nterms_band=1
        )
        rows.append(("raw astropy LombScargleMultiband (flexible)", lambda: model.power(frequency)))
    for name, work in rows:
        repeats = 1 if "flexible" in name else args.repeats
        cpu, wall, result = timed(work, repeats)
        found = ""
        if isinstance(result, dict):
            error = abs(result["best_period"] / TRUE_PERIOD - 1)
            fap = result["peaks"][0]["false_alarm_probability"]
            found = f"  best {result['best_period']:.5f} d ({error:.1e} off), FAP {fap:.1e}"
        print(f"{name:<50} CPU {cpu:6.3f} s  wall {wall:6.3f} s{found}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
