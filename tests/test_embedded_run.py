"""``skyhook run`` (SQLite, in-process bus) under load: every analysis started is dispatched at
once, without the lost-message poller."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.api import ApiClient, TokenUser
from tests.support.embedded import (
    SKYHOOK,
    EmbeddedRun,
    command_line,
    create_token,
    descendants,
    process_alive,
    skyhook_env,
)
from tests.support.fake_service import FakeService
from tests.support.polling import eventually
from tests.support.ports import free_port, free_ports_in_a_row

CONCURRENT_STARTS = 300


CALLBACK = {"status": "success", "message": "done", "analysis": {"results": {"x": 1}}}


@pytest.fixture
async def service() -> AsyncIterator[FakeService]:
    """An analysis service that accepts and calls back at once."""
    async with FakeService(lambda call: CALLBACK, callback_delay=0.0) as running:
        yield running


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[EmbeddedRun]:
    settings = {
        # The lost-message poller never fires during the test: whatever is dispatched was
        # dispatched by the message the start wrote.
        "SKYHOOK_DISPATCH_REQUEUE_AFTER_SECONDS": "1000000",
        "SKYHOOK_MAX_ANALYSES_PER_OBJ_PER_USER": "10000",
    }
    run = EmbeddedRun(tmp_path / "run", settings=settings).start()
    try:
        await run.wait_ready()
        yield run
    finally:
        run.kill()


async def test_concurrent_starts_are_all_dispatched_without_the_poller(
    embedded: EmbeddedRun, service: FakeService
) -> None:
    user = TokenUser(await create_token(embedded))
    connector = aiohttp.TCPConnector(limit=CONCURRENT_STARTS)
    async with ApiClient.at(embedded.url, user, connector=connector) as api:
        await api.ok("POST", "/api/sources", json={"id": "ZTFload1", "ra": 10.0, "dec": 5.0})
        registration = {
            "name": "calls_back",
            "display_name": "Calls back at once",
            "url": service.url,
            "analysis_type": "lightcurve_fitting",
            "input_data_types": [],
            "authentication_type": "none",
        }
        service_id = (await api.ok("POST", "/api/analysis_service", json=registration))["id"]
        start = f"/api/obj/ZTFload1/analysis/{service_id}"
        started = await asyncio.gather(
            *(api.ok("POST", start, json={}) for _ in range(CONCURRENT_STARTS))
        )
        ids = {item["id"] for item in started}
        assert len(ids) == CONCURRENT_STARTS

        async def all_dispatched() -> list[dict[str, Any]] | None:
            listed = [a for a in await api.ok("GET", "/api/obj/analysis") if a["id"] in ids]
            waiting = [a for a in listed if a["status"] in ("queued", "dispatching")]
            return None if waiting or len(listed) < len(ids) else listed

        listed = await eventually(all_dispatched, "every analysis to be dispatched", within=300)
        assert {a["status"] for a in listed} <= {"pending", "completed"}
        attempts = await asyncio.gather(
            *(api.ok("GET", f"/api/obj/analysis/{i}/attempts") for i in sorted(ids))
        )
    assert all(len(found) >= 1 for found in attempts)
    assert len(service.received) == CONCURRENT_STARTS


# --- stopping -----------------------------------------------------------------------------------

FINAL = {"completed", "failure", "timed_out", "cancelled"}


def _demo_run(workdir: Path) -> EmbeddedRun:
    port = free_port()
    ports = ("--fitter-port", str(free_port()), "--summarizer-port", str(free_port()))
    return EmbeddedRun(workdir, port=port, demo=True, extra_args=ports)


async def _start_demo(run: EmbeddedRun) -> tuple[str, int]:
    """Start ``run`` and wait until its SN fitter is warmed up; (token, fitter port)."""
    run.start()
    fitter_port = int(run.extra_args[run.extra_args.index("--fitter-port") + 1])
    await run.wait_ready(url=f"http://127.0.0.1:{fitter_port}")
    await run.wait_ready()
    token = (run.workdir / "var" / "demo-token").read_text().strip()
    return token, fitter_port


async def _all_gone(pids: set[int]) -> None:
    """The processes end (multiprocessing's resource tracker ends once it reads the end of
    its pipe, moments after its parent exits)."""

    async def gone() -> bool:
        return not any(process_alive(pid) for pid in pids)

    try:
        await eventually(gone, "the child processes to end", within=30)
    except AssertionError:
        left = [command_line(pid) for pid in pids if process_alive(pid)]
        raise AssertionError(f"processes left behind: {left}") from None


async def test_sigterm_stops_everything_and_loses_no_analysis(tmp_path: Path) -> None:
    run = _demo_run(tmp_path / "demo")
    try:
        token, _ = await _start_demo(run)
        children = descendants(run.pid)
        # The fitter's worker process (and multiprocessing's resource tracker) run already.
        assert any("multiprocessing" in command_line(pid) for pid in children), children
        user = TokenUser(token)
        async with ApiClient.at(run.url, user) as api:
            services = {s["name"]: s["id"] for s in await api.ok("GET", "/api/analysis_service")}
            body = {"analysis_parameters": {"source": "salt3", "fix_z": "False"}}
            start = f"/api/obj/ZTF24demo001/analysis/{services['sn_fitter']}"
            analysis_id = (await api.ok("POST", start, json=body))["id"]
            in_flight = await api.ok("GET", f"/api/obj/analysis/{analysis_id}")
        assert in_flight["status"] not in FINAL

        run.signal(signal.SIGTERM)
        assert await run.wait_exit() == 0, run.log()[-4000:]
        await _all_gone(children)
        assert "Traceback" not in run.log()

        # Started again, the analysis completes (it finished during the grace period, or the
        # new run sends it again).
        await _start_demo(run)
        async with ApiClient.at(run.url, user) as api:

            async def finished() -> dict[str, Any] | None:
                analysis = await api.ok("GET", f"/api/obj/analysis/{analysis_id}")
                return analysis if analysis["status"] in FINAL else None

            done = await eventually(finished, f"analysis {analysis_id} to finish", within=300)
        assert done["status"] == "completed", done
        run.signal(signal.SIGINT)
        assert await run.wait_exit() == 0, run.log()[-4000:]
    finally:
        run.kill()


# --- ports --------------------------------------------------------------------------------------


async def test_two_demo_instances_coexist_on_their_own_ports(tmp_path: Path) -> None:
    runs = [
        EmbeddedRun(tmp_path / name, port=free_ports_in_a_row(3), demo=True)
        for name in ("first", "second")
    ]
    try:
        for run in runs:
            run.start()
        for run in runs:
            await run.wait_ready()
            await run.wait_ready(url=f"http://127.0.0.1:{run.port + 1}")  # its SN fitter
            await run.wait_ready(url=f"http://127.0.0.1:{run.port + 2}", path="/")  # summarizer
            token = (run.workdir / "var" / "demo-token").read_text().strip()
            async with ApiClient.at(run.url, TokenUser(token)) as api:
                urls = {s["name"]: s["url"] for s in await api.ok("GET", "/api/analysis_service")}
            assert urls == {
                "sn_fitter": f"http://127.0.0.1:{run.port + 1}/analysis/sn_fit",
                "skyhook_summarizer": f"http://127.0.0.1:{run.port + 2}/summarize",
            }
        for run in runs:
            run.signal(signal.SIGTERM)
        for run in runs:
            assert await run.wait_exit() == 0, run.log()[-4000:]
    finally:
        for run in runs:
            run.kill()


async def _run_to_exit(workdir: Path, *argv: str) -> tuple[int, str]:
    # A service run alone refuses the development key; `skyhook run` uses it.
    settings = {} if argv[0] == "run" else {"SKYHOOK_SECRET_KEY": "a-key-of-our-own"}
    process = await asyncio.create_subprocess_exec(
        str(SKYHOOK),
        *argv,
        cwd=workdir,
        env=skyhook_env(**settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    return int(process.returncode or 0), err.decode()


@pytest.mark.parametrize(
    ("argv", "busy_offset", "option"),
    [
        (("run",), 0, "--port"),
        (("run", "--demo"), 1, "--fitter-port"),
        (("run", "--demo"), 2, "--summarizer-port"),
        (("gateway",), 0, "--port or SKYHOOK_PORT"),
        (("gateway", "--workers", "2"), 0, "--port or SKYHOOK_PORT"),
    ],
)
async def test_a_busy_port_is_one_line_naming_the_option(
    tmp_path: Path, argv: tuple[str, ...], busy_offset: int, option: str
) -> None:
    port = free_ports_in_a_row(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + busy_offset))
        taken.listen()
        code, err = await _run_to_exit(tmp_path, *argv, "--port", str(port))
    assert code == 1
    # Everything but log lines (text lines start with the date, JSON lines with "{").
    lines = [line for line in err.splitlines() if not line[:4].isdigit() and line[:1] != "{"]
    assert lines == [
        f"skyhook: port {port + busy_offset} on 127.0.0.1 ({_WHAT[argv[-1], busy_offset]}) "
        f"is already in use; choose another with {option}"
        + (" (or --port N: the demo services then use N+1 and N+2)" if busy_offset else "")
    ], err  # and nothing else: no traceback


_WHAT = {
    ("run", 0): "the API",
    ("--demo", 1): "the demo SN fitter",
    ("--demo", 2): "the demo summarizer",
    ("gateway", 0): "the gateway",
    ("2", 0): "the gateway",  # gateway --workers 2: its supervisor checks the port first
}


async def test_the_standalone_fitter_stops_its_workers_on_sigterm(tmp_path: Path) -> None:
    fitter = EmbeddedRun(tmp_path, command=("sn-fitter",)).start()
    try:
        await fitter.wait_ready()
        children = descendants(fitter.pid)
        assert any("multiprocessing" in command_line(pid) for pid in children), children
        fitter.signal(signal.SIGTERM)
        assert await fitter.wait_exit() == 0, fitter.log()[-4000:]
        await _all_gone(children)
        assert "Traceback" not in fitter.log()
    finally:
        fitter.kill()
