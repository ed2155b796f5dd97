"""Typed request and response bodies of every gateway route, and which route uses which.

``ROUTE_SCHEMAS`` maps each route, by method and OpenAPI path, to its request model (None when
it takes no body) and its success answer: an envelope model, or the media types of a binary
answer. ``gateway.openapi`` builds the document from it; a test checks every route is there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from pydantic import BaseModel, RootModel

from gateway.schemas import (
    accounts,
    analyses,
    analysis_services,
    default_analyses,
    operations,
    periodogram,
    phot_stats,
    products,
    sources,
    summaries,
    webapp,
    webhook,
)
from gateway.schemas.common import (
    BinaryContent,
    Created,
    Empty,
    ErrorEnvelope,
    Success,
    SuccessPage,
    binary,
)


class RouteSchemas(NamedTuple):
    request: type[BaseModel] | None
    response: type[BaseModel] | BinaryContent
    # Another media type the success answer may come in (e.g. a download).
    also: BinaryContent | None = None
    # Statuses whose body is not the error envelope.
    statuses: Mapping[int, type[BaseModel]] = {}


class ServicesAnswer(
    RootModel[Success[list[analysis_services.Service]] | Success[analysis_services.ServicePage]]
):
    """A plain list, or a page object with ``pageNumber``/``numPerPage``."""


class AnalysesAnswer(
    RootModel[
        Success[list[analyses.AnalysisOfSource | analyses.AnalysisBrief]]
        | SuccessPage[analyses.AnalysisOfSource | analyses.AnalysisBrief]
    ]
):
    """Brief items across sources, full ones (with model light curves) for one source; a
    plain list, or with ``pageNumber``/``numPerPage`` the paging facts beside it."""


class SourceAnalysesAnswer(
    RootModel[Success[list[analyses.AnalysisOfSource]] | SuccessPage[analyses.AnalysisOfSource]]
):
    """The analyses of one source, each with its model light curves."""


def _none(request: type[BaseModel] | None = None) -> RouteSchemas:
    """An operation that answers ``data: {}``."""
    return RouteSchemas(request, Success[Empty])


def _created(request: type[BaseModel]) -> RouteSchemas:
    return RouteSchemas(request, Success[Created])


USER = "/api/user/{user_id}"
GROUP = "/api/groups/{group_id}"
SERVICE = "/api/analysis_service/{analysis_service_id}"
DEFAULTS = SERVICE + "/default_analysis"
DEFAULT = DEFAULTS + "/{default_analysis_id}"
SOURCE = "/api/sources/{obj_id}"
ANALYSIS = "/api/obj/analysis/{analysis_id}"
LLM_KEY = "/api/internal/profile/llm_key"
WEBHOOK = "/api/webhook/{resource_type}_analysis/{token}"

ROUTE_SCHEMAS: dict[tuple[str, str], RouteSchemas] = {
    # accounts
    ("POST", "/api/user"): _created(accounts.NewUser),
    ("GET", "/api/user"): RouteSchemas(None, Success[accounts.UserPage]),
    ("GET", USER): RouteSchemas(None, Success[accounts.User]),
    ("PATCH", USER): _none(accounts.UserChange),
    ("GET", "/api/internal/profile"): RouteSchemas(None, Success[accounts.Profile]),
    ("POST", "/api/groups"): _created(accounts.NewGroup),
    ("GET", "/api/groups"): RouteSchemas(None, Success[accounts.Groups]),
    ("GET", GROUP): RouteSchemas(None, Success[accounts.GroupWithMembers]),
    ("POST", GROUP + "/users"): RouteSchemas(accounts.NewMember, Success[accounts.MemberAdded]),
    ("DELETE", GROUP + "/users/{user_id}"): _none(),
    ("POST", "/api/tokens"): RouteSchemas(accounts.NewToken, Success[accounts.IssuedToken]),
    ("GET", "/api/tokens"): RouteSchemas(None, Success[list[accounts.Token]]),
    ("DELETE", "/api/tokens/{token_id}"): _none(),
    # analysis services
    ("POST", "/api/analysis_service"): _created(analysis_services.NewService),
    ("GET", "/api/analysis_service"): RouteSchemas(None, ServicesAnswer),
    ("GET", SERVICE): RouteSchemas(None, Success[analysis_services.Service]),
    ("PATCH", SERVICE): _none(analysis_services.ServiceChange),
    ("DELETE", SERVICE): _none(),
    # default analyses
    ("POST", DEFAULTS): _created(default_analyses.NewDefaultAnalysis),
    ("GET", DEFAULTS): RouteSchemas(None, Success[list[default_analyses.DefaultAnalysis]]),
    ("GET", DEFAULT): RouteSchemas(None, Success[default_analyses.DefaultAnalysis]),
    ("PATCH", DEFAULT): _none(default_analyses.DefaultAnalysisChange),
    ("DELETE", DEFAULT): _none(),
    # sources and their data
    ("POST", "/api/instrument"): _created(sources.NewInstrument),
    ("GET", "/api/instrument"): RouteSchemas(None, Success[list[sources.Instrument]]),
    ("GET", "/api/instrument/{instrument_id}"): RouteSchemas(None, Success[sources.Instrument]),
    ("POST", "/api/sources"): RouteSchemas(sources.NewSource, Success[sources.SourceCreated]),
    ("POST", "/api/source_groups"): RouteSchemas(
        sources.SourceGroupsChange, Success[sources.GroupsChanged]
    ),
    ("GET", "/api/sources"): RouteSchemas(None, Success[sources.SourcePage]),
    ("GET", SOURCE): RouteSchemas(None, Success[sources.SourceWithAnalyses]),
    ("DELETE", SOURCE): _none(),
    ("PATCH", SOURCE): _none(sources.SourceEdit),
    ("POST", "/api/photometry"): RouteSchemas(
        sources.NewPhotometry, Success[sources.PhotometryCreated]
    ),
    ("GET", SOURCE + "/photometry"): RouteSchemas(None, Success[sources.PhotometryPage]),
    ("DELETE", "/api/photometry/{photometry_id}"): _none(),
    ("POST", "/api/spectrum"): _created(sources.NewSpectrum),
    ("GET", SOURCE + "/spectra"): RouteSchemas(None, Success[sources.SpectrumPage]),
    ("POST", SOURCE + "/comments"): RouteSchemas(
        sources.NewComment, Success[sources.CommentCreated]
    ),
    ("POST", "/api/comment"): RouteSchemas(sources.NewCommentOn, Success[sources.CommentCreated]),
    ("GET", SOURCE + "/comments"): RouteSchemas(None, Success[list[sources.Comment]]),
    ("POST", "/api/classification"): RouteSchemas(
        sources.NewClassification, Success[sources.ClassificationCreated]
    ),
    ("GET", SOURCE + "/classifications"): RouteSchemas(None, Success[list[sources.Classification]]),
    ("POST", SOURCE + "/annotations"): RouteSchemas(
        sources.NewAnnotation, Success[sources.AnnotationCreated]
    ),
    ("GET", SOURCE + "/annotations"): RouteSchemas(None, Success[list[sources.Annotation]]),
    # analyses
    ("POST", "/api/obj/{obj_id}/analysis/{analysis_service_id}"): _created(analyses.StartAnalysis),
    ("GET", "/api/obj/analysis"): RouteSchemas(None, AnalysesAnswer),
    ("GET", ANALYSIS): RouteSchemas(None, Success[analyses.Analysis]),
    ("GET", ANALYSIS + "/attempts"): RouteSchemas(None, Success[list[analyses.Attempt]]),
    ("POST", ANALYSIS + "/cancel"): RouteSchemas(None, Success[analyses.Cancelled]),
    ("DELETE", ANALYSIS): _none(),
    ("GET", "/api/obj/{obj_id}/analysis"): RouteSchemas(None, SourceAnalysesAnswer),
    ("GET", "/api/obj/{obj_id}/analysis/{analysis_id}"): RouteSchemas(
        None, Success[analyses.Analysis]
    ),
    ("POST", "/api/obj/{obj_id}/analysis_upload/{analysis_service_id}"): RouteSchemas(
        analyses.UploadAnalysis, Success[analyses.Uploaded]
    ),
    # products
    ("GET", ANALYSIS + "/plots"): RouteSchemas(None, products.PLOT),
    ("GET", ANALYSIS + "/plots/{plot_number}"): RouteSchemas(None, products.PLOT),
    ("GET", ANALYSIS + "/results"): RouteSchemas(
        None, Success[Any], also=binary("download=true: a JSON file", products.RESULTS_DOWNLOAD)
    ),
    ("GET", ANALYSIS + "/corner"): RouteSchemas(None, products.CORNER),
    # summaries
    ("POST", "/api/summary_query"): RouteSchemas(
        summaries.SummaryQuery, Success[summaries.QueryResults]
    ),
    ("GET", LLM_KEY): RouteSchemas(None, Success[summaries.LlmKeyState]),
    ("PUT", LLM_KEY): RouteSchemas(summaries.LlmKey, Success[summaries.LlmKeyState]),
    ("DELETE", LLM_KEY): RouteSchemas(None, Success[summaries.LlmKeyState]),
    # periodogram and photometry statistics
    ("GET", SOURCE + "/periodogram"): RouteSchemas(None, Success[periodogram.Periodogram]),
    ("GET", SOURCE + "/phot_stat"): RouteSchemas(None, Success[phot_stats.PhotStat]),
    ("PUT", SOURCE + "/phot_stat"): _none(),
    ("PATCH", "/api/phot_stats"): RouteSchemas(None, Success[phot_stats.Recomputed]),
    ("GET", "/api/phot_stats/aggregate"): RouteSchemas(None, Success[phot_stats.Aggregate]),
    # webhook
    ("POST", WEBHOOK): RouteSchemas(webhook.WebhookBody, Success[webhook.WebhookAccepted]),
    # operations
    ("GET", "/healthz"): RouteSchemas(None, operations.Alive),
    ("GET", "/readyz"): RouteSchemas(None, operations.Ready, statuses={503: operations.Ready}),
    ("GET", "/metrics"): RouteSchemas(None, operations.METRICS),
    ("GET", "/api/openapi.json"): RouteSchemas(None, operations.OpenApiDocument),
    # the web app
    ("POST", "/api/session"): RouteSchemas(webapp.SignIn, Success[webapp.SignedIn]),
    ("DELETE", "/api/session"): _none(),
    ("GET", "/api/live/analyses"): RouteSchemas(None, webapp.LIVE_EVENTS),
    ("GET", "/api/sources_overview"): RouteSchemas(None, Success[webapp.SourceOverview]),
    ("GET", "/api/analysis_health"): RouteSchemas(None, Success[webapp.AnalysisHealth]),
    **{
        ("GET", page): RouteSchemas(None, webapp.PAGE)
        for page in (
            "/",
            "/login",
            "/source/{obj_id}",
            "/source/{obj_id}/periodogram",
            "/analysis/{analysis_id}",
            "/services",
            "/health",
            "/summaries",
            "/source_stats",
        )
    },
    ("GET", "/static/vendor/plotly.min.js"): RouteSchemas(None, webapp.SCRIPT),
    ("GET", "/static/{name}"): RouteSchemas(None, webapp.STATIC),
}

__all__ = ["ROUTE_SCHEMAS", "BinaryContent", "ErrorEnvelope", "RouteSchemas"]
