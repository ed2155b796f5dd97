"""sn_fitter's fast model agrees with sncosmo; inputs, options, bands and diagnostics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import sncosmo

import sn_fitter
from sn_fitter import OPTIONAL_ANALYSIS_PARAMETERS
from sn_fitter.bands import sncosmo_band_name
from sn_fitter.inputs import InputError, parse_photometry, parse_redshift
from sn_fitter.model import GridModel, Points, build_model, load_source, zp_normalisation
from sn_fitter.options import OptionsError, parse_options
from sn_fitter.quality import az, bound_piles, diagnose
from sn_fitter.sampler import StudentMixture, de_mcmc, fit_mixture, independence_mh


def _points(
    times: np.ndarray, bands: list[str], zp: float = 23.9, magsys: str = "ab"
) -> tuple[Points, np.ndarray, np.ndarray]:
    band_arr = np.array(bands, dtype=object)
    zps = np.full(len(times), zp)
    systems = np.full(len(times), magsys, dtype=object)
    return Points(times, band_arr, zp_normalisation(band_arr, zps, systems)), systems, zps


def _relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))


def _compare(
    source_name: str,
    bands: list[str],
    params_list: list[dict[str, float]],
    z_range: tuple[float, float] | None = None,
    z_fixed: float | None = None,
) -> float:
    times = np.linspace(-35.0, 80.0, 4 * len(bands) * 10)  # includes both phase borders
    band_list = [bands[i % len(bands)] for i in range(len(times))]
    points, systems, zps = _points(times, band_list)
    model = build_model(
        load_source(source_name), sorted(set(bands)), points, systems, zps, z_range, z_fixed
    )
    reference = sncosmo.Model(source_name)
    worst = 0.0
    for params in params_list:
        reference.set(**params)
        expected = reference.bandflux(band_list, times, zp=zps, zpsys=list(systems))
        row = np.array([[params[name] for name in model.param_names]])
        worst = max(worst, _relative_error(model.flux(row)[0], expected))
    return worst


def test_salt3_tables_reproduce_sncosmo_exactly_at_fixed_redshift() -> None:
    rng = np.random.default_rng(3)
    params = [
        {
            "z": 0.0734,
            "t0": rng.uniform(-5, 5),
            "x0": 1e-3,
            "x1": rng.uniform(-4, 4),
            "c": rng.uniform(-0.45, 1.45),
        }
        for _ in range(12)
    ]
    assert _compare("salt3", ["ztfg", "ztfr", "sdssi"], params, z_fixed=0.0734) < 1e-9


def test_salt3_tables_track_sncosmo_over_free_redshift() -> None:
    rng = np.random.default_rng(4)
    params = [
        {
            "z": rng.uniform(0.005, 0.3),
            "t0": rng.uniform(-5, 5),
            "x0": 1e-3,
            "x1": rng.uniform(-3, 3),
            "c": rng.uniform(-0.4, 1.4),
        }
        for _ in range(20)
    ]
    assert _compare("salt3", ["ztfg", "ztfr"], params, z_range=(0.001, 0.3)) < 1e-5


def test_template_wavelength_border_uses_sncosmo_bilinear_rule() -> None:
    # sdssz reaches 11160 A; at z=0.0146 its red end falls between salt3's last wavelength
    # nodes, where sncosmo interpolates bilinearly
    times = np.array([0.0])
    points, systems, zps = _points(times, ["sdssz"])
    model = build_model(load_source("salt3"), ["sdssz"], points, systems, zps, None, 0.0146)
    assert isinstance(model, GridModel)  # salt3 is table-backed
    assert model.tables["sdssz"].has_edge
    params = [{"z": 0.0146, "t0": 1.0, "x0": 1e-3, "x1": 1.0, "c": 0.2}]
    assert _compare("salt3", ["sdssz"], params, z_fixed=0.0146) < 1e-9


def test_salt2_and_bessell_bands() -> None:
    params = [{"z": 0.05, "t0": 0.5, "x0": 2e-3, "x1": -1.0, "c": 0.1}]
    assert _compare("salt2", ["bessellb", "bessellv"], params, z_fixed=0.05) < 1e-9


def test_amplitude_source_sampled_tables_are_close_to_sncosmo() -> None:
    params = [
        {"z": 0.03, "t0": 0.0, "amplitude": 1e-10},
        {"z": 0.11, "t0": 3.0, "amplitude": 1e-10},
    ]
    assert _compare("hsiao-subsampled", ["ztfg", "ztfr"], params, z_range=(0.01, 0.15)) < 2e-3


def test_model_files_are_found_offline() -> None:
    assert sn_fitter.sncosmo_data.bundled_data_dir() is not None
    for band in ("ztfg", "ztfr", "sdssg", "sdssr", "sdssi", "sdssz", "bessellb", "bessellux"):
        assert sncosmo.get_bandpass(band).name == band
    assert sncosmo.get_source("salt3").name == "salt3"


@pytest.mark.parametrize(
    ("name", "instrument", "expected"),
    [
        ("ztfg", None, "ztfg"),
        ("ZTF_g", None, "ztfg"),
        ("ztf-r", None, "ztfr"),
        ("g", "ZTF", "ztfg"),
        ("i", "ZTF Camera", "ztfi"),
        ("r", None, "sdssr"),
        ("sdss_r", None, "sdssr"),
        ("B", None, "bessellb"),
        ("bessellb", None, "bessellb"),
        ("U", None, "bessellux"),
        ("o", "ATLAS", "atlaso"),
        ("desg", None, "desg"),
    ],
)
def test_filter_names_map_to_sncosmo_bands(
    name: str, instrument: str | None, expected: str
) -> None:
    assert sncosmo_band_name(name, instrument) == expected


CSV_HEADER = (
    "mjd,flux,fluxerr,mag,magerr,filter,magsys,limiting_mag,zp,instrument_name,predicted_mag\n"
)


def test_photometry_csv_detections_and_upper_limits() -> None:
    text = CSV_HEADER + (
        "60002.5,120.0,5.0,18.7,0.05,ztfg,ab,20.4,23.9,ZTF,\n"
        "60000.1,,4.0,,,ztfr,ab,20.6,23.9,ZTF,\n"
        "60001.0,,,,,g,ab,20.0,23.9,ZTF,\n"
        "60003.0,,,,,ztfr,ab,,23.9,ZTF,\n"
    )
    lc = parse_photometry(text)
    assert list(lc.time) == [60000.1, 60001.0, 60002.5]  # sorted; the unusable row dropped
    assert lc.ignored_rows == 1
    assert list(lc.band) == ["ztfr", "ztfg", "ztfg"]
    assert lc.n_detections == 1 and lc.n_limits == 2
    limit = 10 ** (-0.4 * (20.6 - 23.9))
    assert lc.flux_limit[0] == pytest.approx(limit) and lc.fluxerr[0] == 4.0
    # limiting_mag only: a 5-sigma limit gives the noise
    assert lc.fluxerr[1] == pytest.approx(10 ** (-0.4 * (20.0 - 23.9)) / 5)


def test_photometry_as_typed_json_records() -> None:
    records = [
        {
            "mjd": 60000.0,
            "flux": 50.0,
            "fluxerr": 2.0,
            "filter": "ztfr",
            "zp": 23.9,
            "magsys": "ab",
            "limiting_mag": None,
        }
    ]
    lc = parse_photometry(records)
    assert lc.n_detections == 1 and lc.band[0] == "ztfr"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("mjd,flux\n", None),
        (CSV_HEADER + "x,1,1,,,ztfg,ab,,23.9,ZTF,\n", "not a number"),
        (CSV_HEADER + "60000,1,,,,ztfg,ab,,23.9,ZTF,\n", "no positive fluxerr"),
        ("flux,filter\n1.0,ztfg\n", "needs an mjd"),
        ("mjd,filter\n60000,ztfg,extra,cells\n", "longer than its header"),
        ("", "no header"),
    ],
)
def test_bad_photometry_is_refused_with_a_message(text: str, fragment: str | None) -> None:
    if fragment is None:
        assert len(parse_photometry(text)) == 0
        return
    with pytest.raises(InputError, match=fragment):
        parse_photometry(text)


def test_redshift_csv() -> None:
    assert (
        parse_redshift("redshift,redshift_error,redshift_origin\n0.05,0.001,spec\n").value == 0.05
    )
    assert parse_redshift("redshift,redshift_error,redshift_origin\n,,\n").value is None
    assert parse_redshift(None).value is None


def test_options_accept_skyportal_strings_and_json_values() -> None:
    options = parse_options(
        {"source": "salt2", "fix_z": "True", "z_max": "0.2", "num_samples": "600", "seed": 5}
    )
    assert (options.source, options.fix_z, options.z_max, options.num_samples, options.seed) == (
        "salt2",
        True,
        0.2,
        600,
        5,
    )
    assert parse_options({"fix_z": False}).fix_z is False
    assert parse_options(None).source == "salt3"
    assert parse_options(None).z_prior == "auto"
    assert parse_options({"z_prior": "Flat", "max_seconds": "12.5"}).max_seconds == 12.5


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"fix_z": "maybe"}, "fix_z"),
        ({"z_min": "abc"}, "z_min"),
        ({"z_min": 0.5, "z_max": 0.1}, "z_min < z_max"),
        ({"num_samples": 5}, "num_samples"),
        ({"num_chains": 2.5}, "whole number"),
        ({"source": 3}, "source"),
        ({"z_prior": "wide"}, "z_prior must be one of auto, survey, flat"),
        ({"max_seconds": 0}, "max_seconds"),
    ],
)
def test_bad_options_are_refused(params: dict[str, Any], fragment: str) -> None:
    with pytest.raises(OptionsError, match=fragment):
        parse_options(params)


def test_quality_checks_use_arviz_definitions_and_name_what_failed() -> None:
    rng = np.random.default_rng(0)
    iid = rng.standard_normal((4, 2000, 2))
    good = diagnose(iid, ["a", "b"], np.array([[-10.0, 10.0], [-np.inf, np.inf]]))
    assert good.passed and good.failures() == []
    assert good.ess_bulk["a"] == pytest.approx(float(az.ess(iid[:, :, 0], method="bulk")))
    assert good.rhat["b"] == pytest.approx(float(az.rhat(iid[:, :, 1])))
    shifted = iid.copy()
    shifted[3, :, 1] += 1.0  # one chain elsewhere: R-hat fails and names the parameter
    bad = diagnose(shifted, ["a", "b"], np.array([[-10.0, 10.0], [-np.inf, np.inf]]))
    assert not bad.converged
    assert any(f.startswith("R-hat") and f.endswith("; b)") for f in bad.failures())
    short = diagnose(iid[:, :150], ["a", "b"], np.array([[-10.0, 10.0], [-10.0, 10.0]]))
    assert [f.split(" ")[0:2] for f in short.failures()] == [["bulk", "ESS"], ["tail", "ESS"]]


def test_a_posterior_piled_at_a_bound_is_flagged() -> None:
    rng = np.random.default_rng(1)
    z = 0.001 + np.abs(rng.normal(0.0, 0.004, size=(4, 1000)))  # half-normal on z_min
    centred = rng.normal(0.05, 0.004, size=(4, 1000))
    samples = np.stack([z, centred], axis=-1)
    bounds = np.array([[0.001, 0.3], [0.001, 0.3]])
    piles = bound_piles(samples.reshape(-1, 2), ["z", "zc"], bounds)
    assert [(p.name, p.side, p.bound) for p in piles] == [("z", "lower", 0.001)]
    assert "z piles at its lower bound 0.001" in piles[0].describe()


def _gaussian_target(mean: np.ndarray, cov: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    inv = np.linalg.inv(cov)

    def log_density(x: np.ndarray) -> np.ndarray:
        d = np.atleast_2d(x) - mean
        return -0.5 * np.einsum("ni,ij,nj->n", d, inv, d)

    return log_density


def test_samplers_recover_a_correlated_gaussian() -> None:
    mean = np.array([1.0, -2.0, 0.5])
    cov = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]])
    target = _gaussian_target(mean, cov)
    rng = np.random.default_rng(1)
    # a deliberately poor proposal: MH must still converge to the target
    poor = StudentMixture.around(mean + 0.3, np.eye(3) * 2.0)
    imh = independence_mh(target, poor, 4, 4000, rng)
    walkers = de_mcmc(target, mean + 0.1 * rng.standard_normal((32, 3)), 2000, 5, rng)
    walkers.draws = walkers.draws[:, 100:]  # the first 500 steps are warm-up
    for chains in (imh, walkers):
        flat = chains.draws.reshape(-1, 3)
        assert np.allclose(flat.mean(axis=0), mean, atol=0.08)
        assert np.allclose(np.cov(flat.T), cov, atol=0.12)


def test_walkers_past_their_deadline_stop_and_say_so() -> None:
    """A DE-MCMC run whose budget is already spent ends after one step with the state it
    reached (so the fit can report unconverged chains instead of running on)."""
    target = _gaussian_target(np.zeros(2), np.eye(2))
    rng = np.random.default_rng(3)
    start = rng.standard_normal((16, 2))
    stopped = de_mcmc(target, start, 10_000, 5, rng, deadline=time.perf_counter() - 1.0)
    assert stopped.out_of_time and stopped.draws.shape == (16, 1, 2)
    assert stopped.evaluations == 16
    finished = de_mcmc(target, start, 20, 5, rng)
    assert not finished.out_of_time and finished.draws.shape == (16, 4, 2)


def _two_modes(x: np.ndarray) -> np.ndarray:
    """0.3 N(-2, 0.5^2) + 0.7 N(2, 1) in x[0], N(0, 1) in x[1]."""
    x = np.atleast_2d(x)
    left = np.log(0.3 / 0.5) - 0.5 * ((x[:, 0] + 2.0) / 0.5) ** 2
    right = np.log(0.7) - 0.5 * (x[:, 0] - 2.0) ** 2
    return np.logaddexp(left, right) - 0.5 * x[:, 1] ** 2


def test_a_mixture_fitted_to_pilot_draws_samples_two_modes_in_proportion() -> None:
    """One Student-t cannot propose both modes well; the EM mixture can, and the chains hold
    each mode in its true share."""
    rng = np.random.default_rng(5)
    left = rng.random(3000) < 0.3
    pilot = np.column_stack(
        [
            np.where(left, rng.normal(-2.0, 0.5, 3000), rng.normal(2.0, 1.0, 3000)),
            rng.standard_normal(3000),
        ]
    )
    proposal = fit_mixture(pilot, 6, rng)
    chains = independence_mh(_two_modes, proposal, 4, 5000, rng)
    flat = chains.draws.reshape(-1, 2)
    assert chains.acceptance > 0.6
    assert abs(np.mean(flat[:, 0] < 0) - 0.3) < 0.03
    assert abs(flat[:, 1].std() - 1.0) < 0.05


def test_optional_parameters_describe_every_accepted_parameter() -> None:
    assert OPTIONAL_ANALYSIS_PARAMETERS["source"][0] == "salt3"
    assert OPTIONAL_ANALYSIS_PARAMETERS["fix_z"] == ["False", "True"]
    assert {"z_min", "z_max", "num_samples", "num_chains", "seed"} <= set(
        OPTIONAL_ANALYSIS_PARAMETERS
    )
    json.dumps(OPTIONAL_ANALYSIS_PARAMETERS)  # registered as a JSON string
