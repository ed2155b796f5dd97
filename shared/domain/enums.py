"""Enumerations shared by the API, the database and the wire formats (SkyPortal spellings)."""

from __future__ import annotations

from enum import StrEnum


class ACL(StrEnum):
    MANAGE_ANALYSIS_SERVICES = "Manage Analysis Services"
    RUN_ANALYSES = "Run Analyses"
    UPLOAD_DATA = "Upload Data"
    # A marker: a view-only user is refused every write, whatever else it holds.
    VIEW_ONLY = "View Only"


class AnalysisType(StrEnum):
    LIGHTCURVE_FITTING = "lightcurve_fitting"
    SPECTRUM_FITTING = "spectrum_fitting"
    META_ANALYSIS = "meta_analysis"


class InputDataType(StrEnum):
    PHOTOMETRY = "photometry"
    SPECTRA = "spectra"
    REDSHIFT = "redshift"
    ANNOTATIONS = "annotations"
    COMMENTS = "comments"
    CLASSIFICATIONS = "classifications"


class AuthenticationType(StrEnum):
    NONE = "none"
    HEADER_TOKEN = "header_token"
    API_KEY = "api_key"
    HTTP_BASIC = "HTTPBasicAuth"
    HTTP_DIGEST = "HTTPDigestAuth"
    OAUTH1 = "OAuth1"


class AnalysisStatus(StrEnum):
    QUEUED = "queued"
    DISPATCHING = "dispatching"
    PENDING = "pending"
    COMPLETED = "completed"
    FAILURE = "failure"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = (AnalysisStatus.QUEUED, AnalysisStatus.DISPATCHING, AnalysisStatus.PENDING)
