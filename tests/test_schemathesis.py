"""schemathesis against the gateway's own OpenAPI document finds no server error.

The gateway runs as a real aiohttp server on each database; schemathesis (its CLI, as an
operator would run it) generates valid and invalid requests for every documented operation as
an admin and checks every answer. The document is generated from the typed models of
``gateway/schemas/``, so the response checks (``response_schema_conformance``,
``content_type_conformance``, ``status_code_conformance``) hold each answer to its model.

Two checks are left out, each for a reason of the document, not of the server:
``positive_data_acceptance`` (the request models say which fields are required and their
types, but not what only the database knows: that named groups, users, services and sources
exist and are visible to the caller, that a URL passes the URL policy, that a service accepts
the parameters; a schema-valid body is still refused with 400 or 404), and
``allow_header_conformance`` (``/api/obj/{obj_id}/analysis/{analysis_id}`` (GET) and
``…/{analysis_service_id}`` (POST) are one route whose capture SkyPortal names differently per
method, so each documented path sees the other's method in ``Allow``).

Two operations are not exercised. ``DELETE /api/tokens/{token_id}`` would revoke the token the
run authenticates with (the first token of the database), after which every later request only
sees 401 and the answers of the other operations go unchecked. ``GET /api/live/analyses`` is an
event stream that stays open while its client listens: each valid request waited out the
client's timeout, which was most of the run's time (its refusals of bad parameters are tested in
``tests/webapp/test_webapp_api.py``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared.runtime.settings import Settings
from tests.support.live_gateway import live_gateway

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("backend")]

MAX_EXAMPLES_PER_OPERATION = 6
EXCLUDED_CHECKS = "positive_data_acceptance,allow_header_conformance"
EXCLUDED_OPERATIONS = ("DELETE /api/tokens/{token_id}", "GET /api/live/analyses")


def schemathesis_command(base_url: str, token: str, report: Path) -> list[str]:
    st = Path(sys.executable).with_name("st")
    return [
        str(st),
        "run",
        f"{base_url}/api/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        EXCLUDED_CHECKS,
        *(option for name in EXCLUDED_OPERATIONS for option in ("--exclude-name", name)),
        "--max-examples",
        str(MAX_EXAMPLES_PER_OPERATION),
        "--workers",
        "1",
        "--header",
        f"Authorization: token {token}",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]


def test_schemathesis_finds_no_server_error_nor_any_other_failure(
    settings: Settings, tmp_path: Path
) -> None:
    report = tmp_path / "schemathesis.xml"
    with live_gateway(settings) as gateway:
        run = subprocess.run(
            schemathesis_command(gateway.base_url, gateway.admin_token, report),
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,  # its working files stay out of the checkout
        )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "Server error" not in output
    tested = re.search(r"Tested: (\d+)", output)
    assert tested is not None and int(tested.group(1)) >= 50, output
    generated = re.search(r"(\d+) generated, (\d+) passed", output)
    assert generated is not None and generated.group(1) == generated.group(2), output
    assert int(generated.group(1)) > 500
