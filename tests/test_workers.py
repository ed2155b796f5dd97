"""``skyhook gateway --workers 2``: two worker processes on one port, over PostgreSQL.

The kernel spreads new connections over the workers (SO_REUSEPORT), ``/metrics`` on either one
reports the sum over both, and SIGTERM to the supervisor stops them all in order (exit 0, no
process left, the metrics directory removed). A worker that dies on its own takes the group
down with exit status 1, for the orchestrator to restart.
"""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path

import aiohttp

from tests.support.embedded import EmbeddedRun, descendants, process_alive
from tests.support.metrics import metric_samples
from tests.support.polling import eventually


def _gateway(tmp_path: Path, database_url: str, workers: int = 2) -> EmbeddedRun:
    settings = {
        "SKYHOOK_DATABASE_URL": database_url,
        "SKYHOOK_AMQP_URL": "memory://",
        "SKYHOOK_SECRET_KEY": secrets.token_hex(16),
        "SKYHOOK_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "SKYHOOK_HOST": "127.0.0.1",
        "SKYHOOK_SHUTDOWN_GRACE_SECONDS": "5",
    }
    command = ("gateway", "--workers", str(workers))
    return EmbeddedRun(tmp_path, command=command, settings=settings)


def _pids(text: str) -> set[int]:
    series = metric_samples(text, "skyhook_worker_http_requests_total", service="gateway")
    return {int(labels["pid"]) for labels, _ in series}


def _exists(path: str) -> bool:
    return Path(path).exists()


def _environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


async def _workers(run: EmbeddedRun, count: int) -> set[int]:
    async def started() -> set[int]:
        found = {pid for pid in descendants(run.pid) if "--worker-of" in _cmdline(pid)}
        return found if len(found) == count else set()

    return set(await eventually(started, f"{count} worker processes", within=120, every=0.1))


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


async def test_two_workers_share_the_port_and_their_metrics_and_stop_on_sigterm(
    tmp_path: Path, pg_database_url: str
) -> None:
    run = _gateway(tmp_path, pg_database_url).start()
    try:
        await run.wait_ready()
        workers = await _workers(run, 2)
        metrics_dir = _environment(min(workers))["PROMETHEUS_MULTIPROC_DIR"]
        assert _exists(metrics_dir)

        sent = 0
        # A new connection per request: the kernel picks a worker for each connection.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def metrics() -> str:
                async with http.get(f"{run.url}/metrics") as response:
                    assert response.status == 200
                    return await response.text()

            async def both_answered() -> bool:
                """Ten more requests, then whether both workers have answered some: the
                second worker may still be starting when the first is ready."""
                nonlocal sent
                for _ in range(10):
                    async with http.get(f"{run.url}/healthz") as response:
                        assert response.status == 200
                    sent += 1
                return _pids(await metrics()) == workers

            await eventually(both_answered, "requests answered by both workers", 120, 0.05)
            text = await metrics()

        # Requests were answered by both workers, and either one reports the sum over both.
        assert _pids(text) == workers, (sent, text)
        counts = metric_samples(
            text, "skyhook_http_request_duration_seconds_count", route="/healthz", status="200"
        )
        assert sum(value for _, value in counts) == sent, counts
        assert len(counts) == 1  # one series: summed over the workers, not one per process

        run.signal(signal.SIGTERM)
        assert await run.wait_exit() == 0, run.log()[-4000:]
        assert not any(process_alive(pid) for pid in workers)
        assert not descendants(run.pid)
        assert not _exists(metrics_dir)
        assert "Traceback" not in run.log()
        assert run.log().count('"message": "stopping"') == 2  # each worker stopped in order
    finally:
        run.kill()


async def test_a_worker_dying_on_its_own_stops_the_group_with_status_1(
    tmp_path: Path, pg_database_url: str
) -> None:
    run = _gateway(tmp_path, pg_database_url).start()
    try:
        await run.wait_ready()
        workers = await _workers(run, 2)
        victim, survivor = sorted(workers)
        os.kill(victim, signal.SIGKILL)
        assert await run.wait_exit() == 1, run.log()[-4000:]
        assert not process_alive(survivor)
        assert f"worker {victim} exited with status -9: stopping the others" in run.log()
    finally:
        run.kill()


async def test_one_worker_is_the_plain_process(tmp_path: Path, pg_database_url: str) -> None:
    """``--workers 1`` (the default) starts no supervisor: the command is the service."""
    run = _gateway(tmp_path, pg_database_url, 1).start()
    try:
        await run.wait_ready()
        assert not descendants(run.pid)
        run.signal(signal.SIGTERM)
        assert await run.wait_exit() == 0, run.log()[-4000:]
    finally:
        run.kill()
