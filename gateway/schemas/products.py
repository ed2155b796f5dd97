"""An analysis' stored products: plots, corner plot and results."""

from __future__ import annotations

from gateway.schemas.common import binary

PLOT = binary(
    "The plot's bytes, in the media type the service gave it",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/svg+xml",
    "application/octet-stream",
)
CORNER = binary("Corner plot of the posterior", "image/png")
# ``download=true``: the results as a JSON file attachment (served as text/plain).
RESULTS_DOWNLOAD = "text/plain"
