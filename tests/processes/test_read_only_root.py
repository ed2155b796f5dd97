"""The deployment with a read-only root filesystem, as helm runs it (``readOnlyRootFilesystem``
with an emptyDir at ``/tmp`` and at HOME): every service process (gateway, webhook receiver,
dispatcher, summary service, SN fitter, summarizer) runs in a mount namespace of its own where
``/`` is read-only and ``/tmp`` is a small tmpfs (``read_only_root`` in conftest.py).

First the wrapper itself is shown to work, so the second test cannot pass by accident: in it
the repository and ``/`` refuse writes, its ``/tmp`` takes them and is not the host's. Then a
real SN fit and an LLM summary (against a local fake of the OpenAI API) run through all six
read-only services: products served, the summary applied to the source, and no service logged
a write refused, a traceback or a secret.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from llm_summarizer.demo import summarizer_registration
from sn_fitter import OPTIONAL_ANALYSIS_PARAMETERS
from sn_fitter.demo import demo_lightcurve
from tests.processes.conftest import (
    FINAL,
    READ_ONLY_HOME,
    STARTUP_SECONDS,
    TMPFS_SIZE,
    Deployment,
    fresh_deployment,
    read_only_root,
    user_api,
)
from tests.support.api import ApiClient
from tests.support.fake_openai import FakeOpenAI
from tests.support.polling import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "webhook-receiver", "dispatcher", "summary-service")
PNG = b"\x89PNG\r\n\x1a\n"
# The SN fitter is ready once its worker process has loaded jax, sncosmo and the model files.
READY_SECONDS = 2 * STARTUP_SECONDS
READ_ONLY = "Read-only file system"
LLM_KEY = f"sk-rofs-{secrets.token_hex(16)}"
# Small enough to finish in seconds; still a real fit of the demo supernova.
FIT_PARAMETERS = {
    "source": "salt3",
    "fix_z": "True",
    "seed": 3,
    "num_samples": 200,
    "num_chains": 2,
    "max_seconds": 5,
}


# --- the wrapper ------------------------------------------------------------------------------

# Run inside the wrapper: tries each path given, reports what it finds as JSON.
PROBE = """
import json, os, sys

def write(path):
    try:
        with open(path, "x") as handle:
            handle.write("probe")
    except OSError as exc:
        return exc.strerror
    return "written"

host_file, *targets = sys.argv[1:]
tmp = os.statvfs("/tmp")
print(json.dumps({
    "writes": {path: write(path) for path in targets},
    "host_file_seen": os.path.exists(host_file),
    "tmp_bytes": tmp.f_blocks * tmp.f_frsize,
    "home": os.environ["HOME"],
    "cwd": os.getcwd(),
    "pid": os.getpid(),
}))
"""


async def run_wrapped(argv: list[str]) -> tuple[int, str]:
    """Run ``argv`` through the wrapper; the pid the test started and the command's stdout."""
    process = await asyncio.create_subprocess_exec(
        *read_only_root(argv),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode(errors="replace")
    return process.pid, out.decode()


async def test_the_wrapper_leaves_only_a_private_tmp_writable() -> None:
    marker = f"skyhook-ro-probe-{uuid.uuid4().hex}"
    host_file = Path("/tmp") / f"{marker}.host"
    in_repo, in_root, in_tmp = REPO / marker, Path("/") / marker, Path("/tmp") / marker
    in_home = Path(READ_ONLY_HOME) / marker
    targets = [in_repo, in_root, in_tmp, in_home]
    host_file.write_text("written by the host")
    try:
        argv = [sys.executable, "-c", PROBE, str(host_file), *map(str, targets)]
        pid, out = await run_wrapped(argv)
        seen = [path for path in targets if path.exists()]
    finally:
        host_file.unlink()
        for path in targets:
            if path.exists():
                path.unlink()
    found = json.loads(out)
    assert found["writes"] == {
        str(in_repo): READ_ONLY,
        str(in_root): READ_ONLY,
        str(in_tmp): "written",
        str(in_home): "written",
    }
    assert seen == [], "what the wrapped process wrote is not on the host"
    assert found["host_file_seen"] is False, "the wrapped /tmp is not the host's"
    assert found["tmp_bytes"] == int(TMPFS_SIZE.removesuffix("m")) * 1024 * 1024
    assert (found["home"], found["cwd"]) == (READ_ONLY_HOME, READ_ONLY_HOME)
    assert found["pid"] == pid, "the process started is the command itself"


# --- the deployment, read-only ------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def llm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(valid_keys={LLM_KEY}) as fake:
        yield fake


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def read_only(
    tmp_path_factory: pytest.TempPathFactory, llm: FakeOpenAI
) -> AsyncIterator[Deployment]:
    """Every service, each in its own read-only root (its own database and bus prefix)."""
    workdir = tmp_path_factory.mktemp("rofs")
    async with fresh_deployment(workdir, "rofs", read_only_root=True) as running:
        for name in SERVICES:
            running.start(name)
        running.start("sn-fitter", {})
        running.start("summarizer", {"LLM_BASE_URL": llm.base_url, "LLM_API_KEY": LLM_KEY})
        await running.wait_ready(within=READY_SECONDS)
        yield running


async def group_id(api: ApiClient, name: str) -> int:
    groups = (await api.ok("GET", "/api/groups"))["user_groups"]
    return next(int(g["id"]) for g in groups if g["name"] == name)


async def supernova(api: ApiClient, group: int) -> str:
    """A source with the demo's simulated SN Ia: its photometry and its redshift."""
    curve = demo_lightcurve(seed=11)
    instrument = {"name": f"ZTF-{uuid.uuid4().hex[:6]}", "filters": ["ztfg", "ztfr"]}
    instrument_id = (await api.ok("POST", "/api/instrument", json=instrument))["id"]
    obj_id = f"SN{uuid.uuid4().hex[:10]}"
    source = {"id": obj_id, "ra": 10.0, "dec": -5.0, "redshift": curve.redshift}
    await api.ok("POST", "/api/sources", json={**source, "group_ids": [group]})
    points = {"obj_id": obj_id, "instrument_id": instrument_id, **curve.columnar()}
    await api.ok("POST", "/api/photometry", json={**points, "group_ids": [group]})
    return obj_id


async def start_analysis(api: ApiClient, obj_id: str, service_id: int, body: Any) -> int:
    return int((await api.ok("POST", f"/api/obj/{obj_id}/analysis/{service_id}", json=body))["id"])


async def wait_final(api: ApiClient, analysis_id: int, within: float) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        analysis: dict[str, Any] = await api.ok("GET", f"/api/obj/analysis/{analysis_id}")
        return analysis if analysis["status"] in FINAL else None

    return await eventually(final, f"analysis {analysis_id} final", within, every=0.2)


def mounts_of(pid: int) -> dict[str, tuple[list[str], str]]:
    """A process's mount points as it sees them: (mount options, file system type); the
    last mount on a point is the one in effect."""
    found = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        parts = fields.split()
        found[parts[4]] = (parts[5].split(","), tail.split()[0])
    return found


def _assert_read_only_roots(deployment: Deployment) -> None:
    """Each service process runs in a mount namespace of its own, with / read-only."""
    own = os.readlink("/proc/self/ns/mnt")
    for name, process in deployment.processes.items():
        pid = process.popen.pid
        assert os.readlink(f"/proc/{pid}/ns/mnt") != own, name
        mounts = mounts_of(pid)
        assert "ro" in mounts["/"][0], (name, mounts["/"])
        assert mounts["/tmp"][1] == "tmpfs", (name, mounts["/tmp"])


async def test_a_fit_and_a_summary_run_through_every_read_only_service(
    read_only: Deployment, llm: FakeOpenAI
) -> None:
    assert sorted(read_only.processes) == sorted([*SERVICES, "sn-fitter", "summarizer"])
    _assert_read_only_roots(read_only)
    name = f"rofs-{uuid.uuid4().hex[:8]}"
    api = await user_api(read_only, name)
    try:
        group = await group_id(api, name)
        obj_id = await supernova(api, group)
        await _fit(api, read_only, obj_id, group)
        await _summarize(api, read_only, obj_id, group)
    finally:
        await api.close()
    (chat,) = llm.requests_to("/v1/chat/completions")
    assert chat.headers["Authorization"] == f"Bearer {LLM_KEY}"
    _assert_clean_logs(read_only, {LLM_KEY, read_only.secret_key, *read_only.api_tokens})


async def _fit(api: ApiClient, deployment: Deployment, obj_id: str, group: int) -> None:
    registration = {
        "name": f"sn-fitter-{uuid.uuid4().hex[:8]}",
        "display_name": "SN fitter",
        "url": f"{deployment.url('sn-fitter')}/analysis/sn_fit",
        "authentication_type": "none",
        "analysis_type": "lightcurve_fitting",
        "input_data_types": ["photometry", "redshift"],
        "optional_analysis_parameters": json.dumps(OPTIONAL_ANALYSIS_PARAMETERS),
        "timeout": 300.0,
        "group_ids": [group],
    }
    service_id = (await api.ok("POST", "/api/analysis_service", json=registration))["id"]
    start = {"analysis_parameters": FIT_PARAMETERS, "show_plots": True}
    analysis_id = await start_analysis(api, obj_id, service_id, start)
    done = await wait_final(api, analysis_id, within=180)
    assert done["status"] == "completed", done["status_message"]
    plot = await api.call("GET", f"/api/obj/analysis/{analysis_id}/plots/0")
    assert plot.status == 200 and plot.body.startswith(PNG)
    results = await api.ok("GET", f"/api/obj/analysis/{analysis_id}/results")
    assert results["model"] == "salt3"


async def _summarize(api: ApiClient, deployment: Deployment, obj_id: str, group: int) -> None:
    url = f"{deployment.url('summarizer')}/summarize"
    registration = {
        **summarizer_registration(url, [group]),
        "name": f"summarizer-{uuid.uuid4().hex[:8]}",
    }
    service_id = (await api.ok("POST", "/api/analysis_service", json=registration))["id"]
    comment = {"text": "Broad silicon absorption near maximum light in a spiral host"}
    await api.ok("POST", f"/api/sources/{obj_id}/comments", json=comment)
    analysis_id = await start_analysis(api, obj_id, service_id, {})
    done = await wait_final(api, analysis_id, within=60)
    assert done["status"] == "completed", done["status_message"]

    async def summarized() -> str | None:
        summary = (await api.ok("GET", f"/api/sources/{obj_id}"))["summary"]
        return summary if summary and "silicon absorption" in summary else None

    summary = await eventually(summarized, "the summary applied to the source", 30, every=0.2)
    assert obj_id in summary, "the fake model restates the source's id"


def _assert_clean_logs(deployment: Deployment, secrets: set[str]) -> None:
    """No service was refused a write or failed with a traceback; no secret was logged."""
    paths = deployment.log_paths()
    logged = {path.stem for path in paths}
    assert logged >= {*SERVICES, "sn-fitter", "summarizer"}, logged
    for path in paths:
        text = path.read_text(errors="replace")
        assert READ_ONLY not in text, f"{path.name}:\n{text[-3000:]}"
        assert "Traceback" not in text, f"{path.name}:\n{text[-3000:]}"
        leaked = [s[:6] + "…" for s in secrets if s in text]
        assert not leaked, f"{path.name} contains secrets: {leaked}"
