"""The gateway's route table: every route the gateway serves, read top to bottom.

Each entry names the method, the path, the handler, who may call it, and what the OpenAPI
document shows of it (summary, tag, query parameters, answers beyond the usual); its typed
request and response bodies are in :mod:`gateway.schemas`, by method and path (a test fails for
a route without them). The one list registers the routes, drives authentication and builds the
OpenAPI document (:func:`gateway.app.create_gateway_app`).

Who may call a route (:class:`~http_edge.access.Access`): ``PUBLIC`` needs no credentials;
``USER`` any authenticated caller (``Authorization: token …`` or the web app's session
cookie); ``ACL(…)`` a caller holding that ACL; ``ADMIN`` a system admin. The level is what the
whole route requires; a handler still checks what depends on the row (a group admin, the
author of an analysis, a source shared with the caller).
"""

from __future__ import annotations

from gateway import live, openapi, web_session, webapp_api
from gateway.handlers import (
    accounts,
    analyses,
    analysis_services,
    analysis_uploads,
    default_analyses,
    instruments,
    periodogram,
    phot_stats,
    photometry,
    products,
    source_notes,
    sources,
    spectra,
    summaries,
)
from gateway.source_filters import SOURCE_LIST_FILTERS
from http_edge import operations
from http_edge.access import Access
from http_edge.web import Route
from shared.domain.enums import ACL
from webapp import pages


def gateway_routes() -> list[Route]:
    # The webhook route (/api/webhook/…) is the webhook receiver's: the composition root
    # mounts it beside this table where the gateway serves it (skyhook/composition.py).
    # Laid out by hand (fmt: skip): an entry's first line is method, path, handler and access;
    # the lines under it are what the OpenAPI document shows.
    return [
        # Accounts: users (created and changed by system admins), groups, API tokens.
        Route("POST", "/api/user", accounts.post_user, Access.ADMIN,
              "Create a user (system admin)", "accounts"),
        Route("GET", "/api/user", accounts.list_users, Access.ADMIN,
              "List users (system admin)", "accounts", query=("pageNumber", "numPerPage")),
        Route("GET", "/api/user/{user_id}", accounts.get_user, Access.USER,
              "Get a user (self or system admin)", "accounts"),
        Route("PATCH", "/api/user/{user_id}", accounts.patch_user, Access.ADMIN,
              "Change a user's ACLs or admin flag", "accounts"),
        Route("GET", "/api/internal/profile", accounts.get_profile, Access.USER,
              "The calling user", "accounts"),
        Route("POST", "/api/groups", accounts.post_group, Access.ADMIN,
              "Create a group (system admin)", "accounts"),
        Route("GET", "/api/groups", accounts.list_groups, Access.USER,
              "Groups the caller belongs to", "accounts"),
        Route("GET", "/api/groups/{group_id}", accounts.get_group, Access.USER,
              "A group and its members", "accounts"),
        Route("POST", "/api/groups/{group_id}/users", accounts.post_group_user, Access.USER,
              "Add a member to a group (group admin)", "accounts"),
        Route("DELETE", "/api/groups/{group_id}/users/{user_id}",
              accounts.delete_group_user, Access.USER,
              "Remove a member from a group (group admin)", "accounts"),
        Route("POST", "/api/tokens", accounts.post_token, Access.USER,
              "Create an API token; the secret is shown once", "accounts"),
        Route("GET", "/api/tokens", accounts.list_tokens, Access.USER,
              "The caller's tokens (without secrets)", "accounts"),
        Route("DELETE", "/api/tokens/{token_id}", accounts.delete_token, Access.USER,
              "Revoke a token", "accounts"),

        # Analysis services. Changing or deleting one checks Manage Analysis Services inside the
        # handler, after reading the id (a bad id is a 400 first).
        Route("POST", "/api/analysis_service",
              analysis_services.post_analysis_service, Access.ACL(ACL.MANAGE_ANALYSIS_SERVICES),
              "Register an analysis service (ACL: Manage Analysis Services)", "analysis services",
              responses={403: "a group is not accessible"}),
        Route("GET", "/api/analysis_service", analysis_services.list_analysis_services, Access.USER,
              "Analysis services visible to the caller", "analysis services",
              query=("pageNumber", "numPerPage")),
        Route("GET", "/api/analysis_service/{analysis_service_id}",
              analysis_services.get_analysis_service, Access.USER,
              "One analysis service (secrets never included)", "analysis services",
              responses={403: "Cannot access this Analysis Service."}),
        Route("PATCH", "/api/analysis_service/{analysis_service_id}",
              analysis_services.patch_analysis_service, Access.USER,
              "Change an analysis service; the merged result is validated like a new one",
              "analysis services",
              responses={403: "Cannot access this Analysis Service."}),
        Route("DELETE", "/api/analysis_service/{analysis_service_id}",
              analysis_services.delete_analysis_service, Access.USER,
              "Delete an analysis service and its analyses", "analysis services",
              responses={403: "Cannot delete this Analysis Service."}),

        # Default analyses: a service run automatically on new sources that pass a filter.
        Route("POST", "/api/analysis_service/{analysis_service_id}/default_analysis",
              default_analyses.post_default_analysis, Access.ACL(ACL.MANAGE_ANALYSIS_SERVICES),
              "Add a default analysis: the service starts by itself when a source meets "
              "source_filter (Manage Analysis Services)",
              "default analyses",
              responses={404: "Analysis service not found (or not shared with the caller)"}),
        Route("GET", "/api/analysis_service/{analysis_service_id}/default_analysis",
              default_analyses.get_default_analyses, Access.USER,
              "The service's default analyses", "default analyses"),
        Route("GET", "/api/analysis_service/{analysis_service_id}/default_analysis"
                     "/{default_analysis_id}",
              default_analyses.get_default_analysis, Access.USER,
              "One default analysis, with its stats", "default analyses"),
        Route("PATCH", "/api/analysis_service/{analysis_service_id}/default_analysis"
                       "/{default_analysis_id}",
              default_analyses.patch_default_analysis, Access.ACL(ACL.MANAGE_ANALYSIS_SERVICES),
              "Change a default analysis (Manage Analysis Services)", "default analyses"),
        Route("DELETE", "/api/analysis_service/{analysis_service_id}/default_analysis"
                        "/{default_analysis_id}",
              default_analyses.delete_default_analysis, Access.ACL(ACL.MANAGE_ANALYSIS_SERVICES),
              "Delete a default analysis (Manage Analysis Services)", "default analyses"),

        # Instruments.
        Route("POST", "/api/instrument", instruments.post_instrument, Access.ACL(ACL.UPLOAD_DATA),
              "Register an instrument (Upload Data)", "instruments"),
        Route("GET", "/api/instrument", instruments.list_instruments, Access.USER,
              "List instruments (optionally by exact name)", "instruments", query=("name",)),
        Route("GET", "/api/instrument/{instrument_id}", instruments.get_instrument, Access.USER,
              "Get an instrument", "instruments"),

        # Sources and what is attached to them: photometry, spectra, comments, classifications,
        # annotations. Commenting checks Upload Data inside the handler, after reading the body.
        Route("POST", "/api/sources", sources.post_source, Access.ACL(ACL.UPLOAD_DATA),
              "Create a source shared with groups (Upload Data)", "sources"),
        Route("POST", "/api/source_groups",
              sources.post_source_groups, Access.ACL(ACL.UPLOAD_DATA),
              "Save a source to groups or unsave it from some (Upload Data)", "sources",
              responses={404: "source not found or not visible"}),
        Route("GET", "/api/sources", sources.list_sources, Access.USER,
              "Sources the caller can see, newest first; photometry-statistics filters", "sources",
              query=("pageNumber", "numPerPage", *SOURCE_LIST_FILTERS)),
        Route("GET", "/api/sources/{obj_id}", sources.get_source, Access.USER,
              "A source (404 when missing or not shared with the caller)", "sources",
              query=("includeAnalyses",), responses={404: "source not found or not visible"}),
        Route("DELETE", "/api/sources/{obj_id}", sources.delete_source, Access.ADMIN,
              "Delete a source and all its data (system admin)", "sources",
              responses={404: "source not found"}),
        Route("POST", "/api/photometry", photometry.post_photometry, Access.ACL(ACL.UPLOAD_DATA),
              "Upload photometry, columnar: each field a scalar (broadcast) or a list "
              "(Upload Data)", "photometry"),
        Route("GET", "/api/sources/{obj_id}/photometry",
              photometry.get_source_photometry, Access.USER,
              "A source's photometry the caller can see (AB, zp 23.9), ordered by mjd",
              "photometry", query=("pageNumber", "numPerPage", "phaseFoldData"),
              responses={404: "source not found or not visible"}),
        Route("DELETE", "/api/photometry/{photometry_id}",
              photometry.delete_photometry, Access.ACL(ACL.UPLOAD_DATA),
              "Delete a photometry point (its owner or a system admin; Upload Data)", "photometry",
              responses={404: "point not found or not visible"}),
        Route("POST", "/api/spectrum", spectra.post_spectrum, Access.ACL(ACL.UPLOAD_DATA),
              "Upload a spectrum (Upload Data)", "spectra"),
        Route("GET", "/api/sources/{obj_id}/spectra", spectra.get_source_spectra, Access.USER,
              "A source's spectra the caller can see", "spectra",
              query=("pageNumber", "numPerPage"),
              responses={404: "source not found or not visible"}),
        Route("POST", "/api/sources/{obj_id}/comments",
              source_notes.post_source_comment, Access.USER,
              "Comment on a source (Upload Data)", "comments",
              responses={404: "source not found or not visible"}),
        Route("POST", "/api/comment", source_notes.post_comment, Access.USER,
              "Comment on a source named in the body (SkyPortal's older form)", "comments",
              responses={404: "source not found or not visible"}),
        Route("GET", "/api/sources/{obj_id}/comments",
              source_notes.get_source_comments, Access.USER,
              "A source's comments the caller can see", "comments",
              responses={404: "source not found or not visible"}),
        Route("POST", "/api/classification",
              source_notes.post_classification, Access.ACL(ACL.UPLOAD_DATA),
              "Classify a source (Upload Data)", "classifications",
              responses={404: "source not found or not visible"}),
        Route("GET", "/api/sources/{obj_id}/classifications",
              source_notes.get_source_classifications, Access.USER,
              "A source's classifications the caller can see", "classifications",
              responses={404: "source not found or not visible"}),
        Route("POST", "/api/sources/{obj_id}/annotations",
              source_notes.post_source_annotation, Access.ACL(ACL.UPLOAD_DATA),
              "Annotate a source; one annotation per origin (Upload Data)", "annotations",
              responses={404: "source not found or not visible"}),
        Route("GET", "/api/sources/{obj_id}/annotations",
              source_notes.get_source_annotations, Access.USER,
              "A source's annotations the caller can see", "annotations",
              responses={404: "source not found or not visible"}),

        # Analyses of sources: start, read, cancel, delete; their plots and results; uploads of
        # results computed elsewhere.
        Route("POST", "/api/obj/{obj_id}/analysis/{analysis_service_id}",
              analyses.post_analysis, Access.ACL(ACL.RUN_ANALYSES, cached_caller=True),
              "Start an analysis of a source; answers with its id at once (status queued)",
              "analyses",
              responses={403: "service not usable, upload-only, disabled, or cap reached",
                         404: "source not found"}),
        Route("GET", "/api/obj/analysis", analyses.list_analyses, Access.USER,
              "Analyses the caller can read", "analyses", query=ANALYSIS_LIST_QUERY),
        Route("GET", "/api/obj/analysis/{analysis_id}", analyses.get_analysis, Access.USER,
              "One analysis", "analyses", query=("includeAnalysisData", "objID"),
              responses={403: "Cannot access this Analysis."}),
        Route("GET", "/api/obj/analysis/{analysis_id}/attempts",
              analyses.list_attempts, Access.USER,
              "Every attempt to send the analysis to its service", "analyses",
              responses={403: "Cannot access this Analysis."}),
        Route("POST", "/api/obj/analysis/{analysis_id}/cancel",
              analyses.post_cancel, Access.ACL(ACL.RUN_ANALYSES),
              "Cancel an analysis still in flight (author or system admin)", "analyses",
              responses={403: "Only the author of this Analysis or a system admin can cancel it."}),
        Route("DELETE", "/api/obj/analysis/{analysis_id}",
              analyses.delete_analysis_handler, Access.ACL(ACL.RUN_ANALYSES),
              "Delete an analysis, its stored results and the summaries it wrote", "analyses",
              responses={403: "Cannot delete this Analysis."}),
        Route("GET", "/api/obj/{obj_id}/analysis", analyses.list_analyses, Access.USER,
              "Analyses of a source", "analyses", query=ANALYSIS_LIST_QUERY,
              responses={404: "source not found"}),
        Route("GET", "/api/obj/{obj_id}/analysis/{analysis_id}", analyses.get_analysis, Access.USER,
              "One analysis of a source", "analyses", query=("includeAnalysisData",),
              responses={403: "Cannot access this Analysis.", 404: "source not found"}),
        Route("POST", "/api/obj/{obj_id}/analysis_upload/{analysis_service_id}",
              analysis_uploads.post_analysis_upload, Access.ACL(ACL.RUN_ANALYSES),
              "Upload results for an upload-only analysis service (stored as completed)",
              "analyses",
              responses={403: "service not usable, not upload-only, disabled, or cap reached",
                         404: "source not found"}),
        Route("GET", "/api/obj/analysis/{analysis_id}/plots", products.get_plot, Access.USER,
              "The first plot of an analysis (image bytes)", "analyses"),
        Route("GET", "/api/obj/analysis/{analysis_id}/plots/{plot_number}",
              products.get_plot, Access.USER,
              "Plot number n of an analysis (image bytes)", "analyses",
              responses={404: "no such plot"}),
        Route("GET", "/api/obj/analysis/{analysis_id}/results", products.get_results, Access.USER,
              "An analysis' results as JSON (joblib decoded safely)", "analyses",
              query=("download",), responses={422: "results refused by the safe decoder"}),
        Route("GET", "/api/obj/analysis/{analysis_id}/corner", products.get_corner, Access.USER,
              "Corner plot (PNG) of the analysis' posterior", "analyses",
              responses={404: "no posterior", 422: "posterior cannot be drawn"}),

        # Summaries and the summary search; the caller's own LLM key.
        Route("PATCH", "/api/sources/{obj_id}",
              summaries.patch_source, Access.ACL(ACL.UPLOAD_DATA),
              "Set a source's summary (with a history entry) or redshift (Upload Data)",
              "summaries",
              responses={400: "invalid fields", 404: "source not found or not visible"}),
        Route("POST", "/api/summary_query", summaries.summary_query, Access.USER,
              "Sources whose summaries are nearest to a text or to another source's summary",
              "summaries",
              responses={400: "invalid query or search not configured",
                         502: "embeddings API failed"}),
        Route("GET", "/api/internal/profile/llm_key", summaries.get_llm_key, Access.USER,
              "Whether the caller has stored an LLM API key (the key is never returned)",
              "summaries"),
        Route("PUT", "/api/internal/profile/llm_key", summaries.put_llm_key, Access.USER,
              "Store the caller's own LLM API key (encrypted), used for their summary analyses",
              "summaries"),
        Route("DELETE", "/api/internal/profile/llm_key", summaries.delete_llm_key, Access.USER,
              "Remove the caller's stored LLM API key", "summaries"),

        # Periodograms and photometry statistics.
        Route("GET", "/api/sources/{obj_id}/periodogram",
              periodogram.get_periodogram, Access.USER,
              "Lomb-Scargle periodogram (single-band or multiband, with false-alarm "
              "probabilities) of the photometry the caller can read",
              "analysis",
              query=PERIODOGRAM_QUERY,
              responses={404: "source not found or not visible"}),
        Route("GET", "/api/sources/{obj_id}/phot_stat", phot_stats.get_phot_stat, Access.USER,
              "A source's photometry statistics over the points the caller can read",
              "photometry statistics", responses={404: "source not found or not visible"}),
        Route("PUT", "/api/sources/{obj_id}/phot_stat", phot_stats.put_phot_stat, Access.ADMIN,
              "Recompute a source's stored photometry statistics (system admin)",
              "photometry statistics", responses={404: "source not found or not visible"}),
        Route("PATCH", "/api/phot_stats", phot_stats.recompute_all, Access.ADMIN,
              "Recompute the stored photometry statistics of every source (system admin)",
              "photometry statistics"),
        Route("GET", "/api/phot_stats/aggregate", phot_stats.get_aggregate, Access.USER,
              "Photometry statistics of many readable sources, two or three fields each, "
              "for plotting",
              "photometry statistics",
              query=AGGREGATE_QUERY),

        # Operations: liveness, readiness, Prometheus metrics.
        Route("GET", "/healthz", operations.healthz, Access.PUBLIC,
              "Liveness: the process answers", "operations"),
        Route("GET", "/readyz", operations.readyz, Access.PUBLIC,
              "Readiness: database and bus answer", "operations"),
        Route("GET", "/metrics", operations.metrics, Access.PUBLIC,
              "Prometheus metrics", "operations"),

        # The web app: its session (sign in with a token or a one-time code, sign out), live
        # updates, the API calls only it makes, its pages and static files.
        Route("POST", "/api/session", web_session.create_session, Access.PUBLIC,
              "Sign in to the web app: exchange an API token (or a one-time sign-in code) for an "
              "HttpOnly session cookie",
              "web app",
              responses={401: "invalid token or used sign-in code"}),
        Route("DELETE", "/api/session", web_session.delete_session, Access.PUBLIC,
              "Sign out of the web app (clears the session cookies)", "web app"),
        Route("GET", "/api/live/analyses", live.analysis_events, Access.USER,
              "Server-Sent Events: `analysis` events (id, obj_id, status, status_message, "
              "last_activity, duration, service) whenever an analysis the caller may read changes",
              "web app", query=("objID", "analysisServiceID")),
        Route("GET", "/api/sources_overview", webapp_api.source_overview, Access.USER,
              "Sources the caller can see, newest first, searchable by id (`q`, case-insensitive "
              "substring), each with a summary preview and its readable analyses counted by "
              "status; takes the sources list's photometry filters (numberDetections, "
              "firstDetectionAfter, lastDetectionBefore, min/maxPeakMagnitude, "
              "min/maxLatestMagnitude, excludeForcedPhotometry)",
              "web app", query=("q", "pageNumber", "numPerPage", *SOURCE_LIST_FILTERS)),
        Route("GET", "/api/analysis_health", webapp_api.analysis_health, Access.USER,
              "Analyses the caller can read created within `window` (1h, 24h, 7d, 30d): counts "
              "by status and the newest failures (failure, timed_out) first",
              "web app", query=("window", "analysisServiceID", "status", "numFailures")),
        Route("GET", "/", pages.page, Access.PUBLIC,
              "The web app: sources", "web app"),
        Route("GET", "/login", pages.page, Access.PUBLIC,
              "The web app: sign in", "web app"),
        Route("GET", "/source/{obj_id}", pages.page, Access.PUBLIC,
              "The web app: a source", "web app"),
        Route("GET", "/source/{obj_id}/periodogram", pages.page, Access.PUBLIC,
              "The web app: a source's periodogram", "web app"),
        Route("GET", "/analysis/{analysis_id}", pages.page, Access.PUBLIC,
              "The web app: an analysis", "web app"),
        Route("GET", "/services", pages.page, Access.PUBLIC,
              "The web app: analysis services", "web app"),
        Route("GET", "/health", pages.page, Access.PUBLIC,
              "The web app: analyses across sources by status", "web app"),
        Route("GET", "/summaries", pages.page, Access.PUBLIC,
              "The web app: search source summaries", "web app"),
        Route("GET", "/source_stats", pages.page, Access.PUBLIC,
              "The web app: photometry statistics across sources", "web app"),
        Route("GET", "/static/vendor/plotly.min.js", pages.plotly_js, Access.PUBLIC,
              "plotly.js, from the installed plotly package", "web app"),
        Route("GET", "/static/{name}", pages.static_file, Access.PUBLIC,
              "The web app's scripts and styles", "web app"),

        # This API's OpenAPI document, built from this table (and any routes mounted beside it).
        Route("GET", "/api/openapi.json", openapi.get_openapi, Access.PUBLIC,
              "This OpenAPI document", "meta"),
    ]  # fmt: skip


# Query strings several routes share, as the OpenAPI document shows them.
ANALYSIS_LIST_QUERY = (
    "includeAnalysisData",
    "summaryOnly",
    "objID",
    "analysisServiceID",
    "pageNumber",
    "numPerPage",
)
PERIODOGRAM_QUERY: tuple[str, ...] = (
    "filters",
    "instrument_ids",
    "method",
    "min_period",
    "max_period",
    "samples_per_peak",
    "n_peaks",
    "nterms",
)
AGGREGATE_QUERY: tuple[str, ...] = (
    "xField",
    "yField",
    "zField",
    "classifications",
    "classificationProbThreshold",
    "group_id",
    "obj_ids",
    "maxMatches",
)
