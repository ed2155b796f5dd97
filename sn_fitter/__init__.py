"""sn_fitter: the example external analysis service (supernova light-curve fits).

It speaks SkyPortal's analysis-service protocol: it receives the platform's POST, answers
``pending`` at once, samples the posterior of an sncosmo model off the event loop and POSTs
the results to the callback URL.
"""

from sn_fitter.sncosmo_data import configure_data_dir

configure_data_dir()

from sn_fitter.options import OPTIONAL_ANALYSIS_PARAMETERS  # noqa: E402

__all__ = ["OPTIONAL_ANALYSIS_PARAMETERS"]
