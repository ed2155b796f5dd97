"""A deployment on this machine, one OS process per service, as compose runs it.

``skyhook gateway``, ``webhook-receiver``, ``dispatcher`` (two replicas) and ``summary-service``
each run as a subprocess with ``SKYHOOK_*`` settings against the local PostgreSQL (a fresh
database, migrated with ``skyhook db upgrade``) and RabbitMQ (a bus prefix unique to the run).
The standalone analysis services (``sn-fitter``, ``summarizer``) get only where they listen and
the settings the test gives them. Each process writes its JSON log lines to a file; a failing
test shows their tails. Everything started here is killed at teardown, and the kernel kills it
too if the test run itself dies.

With ``read_only_root`` each process runs as helm runs it (``readOnlyRootFilesystem`` and an
emptyDir at ``/tmp`` and at HOME): in a mount namespace of its own where ``/`` is read-only
and ``/tmp`` is a small tmpfs holding HOME (see :func:`read_only_root`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import pytest
import pytest_asyncio

from tests.conftest import AMQP_URL, PG_ADMIN_URL
from tests.support.api import ApiClient, TokenUser
from tests.support.fake_service import FakeService
from tests.support.polling import eventually
from tests.support.ports import free_port

SKYHOOK = Path(sys.executable).with_name("skyhook")
SERVICES = ("gateway", "webhook-receiver", "dispatcher-1", "dispatcher-2", "summary-service")
DISPATCHERS = ("dispatcher-1", "dispatcher-2")
# The analysis services: HTTP only, no database, bus or secret key.
STANDALONE = ("sn-fitter", "summarizer")
ACTIVE = ("queued", "dispatching", "pending")
FINAL = frozenset({"completed", "failure", "timed_out", "cancelled"})
# Sends in flight per dispatcher: a held service fills both dispatchers' slots with this many.
DISPATCH_CONCURRENCY = 3
STARTUP_SECONDS = 60.0
RABBITMQCTL_FIX = (
    "rabbitmqctl must work for these tests (they cut the broker connections with it). "
    "Install the RabbitMQ server tools (apt-get install rabbitmq-server) and run the tests as "
    "a user who can read the broker's Erlang cookie: root, or copy "
    "/var/lib/rabbitmq/.erlang.cookie to ~/.erlang.cookie (mode 400)."
)


# The image's HOME and MPLCONFIGDIR (deploy/Dockerfile), under /tmp: the only writable place.
TMPFS_SIZE = "64m"
READ_ONLY_HOME = "/tmp/home"
READ_ONLY_ROOT_SCRIPT = (
    "mount -o remount,bind,ro / && "
    f"mount -t tmpfs -o size={TMPFS_SIZE},mode=1777 tmpfs /tmp && "
    f"mkdir {READ_ONLY_HOME} && cd {READ_ONLY_HOME} && "
    f"export HOME={READ_ONLY_HOME} MPLCONFIGDIR=/tmp/matplotlib && "
    'exec "$@"'
)


def read_only_root(argv: list[str]) -> list[str]:
    """``argv`` run as under helm's ``readOnlyRootFilesystem``: in a private mount namespace
    where ``/`` is remounted read-only (this mount point only: the host keeps writing), ``/tmp``
    is a fresh size-limited tmpfs (its files are gone with the process) and HOME and the
    working directory are ``/tmp/home``. ``unshare`` and ``sh`` exec without forking, so the
    process started is ``argv`` itself: signals and the parent-death signal reach it."""
    wrapper = ["unshare", "--mount", "--propagation", "private"]
    return [*wrapper, "sh", "-c", READ_ONLY_ROOT_SCRIPT, "sh", *argv]


def _die_with_test_run() -> None:
    """Runs in the child before exec: the kernel SIGKILLs it when the test process dies."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


async def run_command(*argv: str, env: dict[str, str] | None = None, within: float = 60) -> str:
    """Run a command to completion; its stdout, or AssertionError with its output."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(within):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{' '.join(argv)} did not finish in {within} s") from None
    if process.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited with {process.returncode}:\n{err.decode(errors='replace')}"
        )
    return out.decode()


async def rabbitmqctl(*args: str) -> str:
    try:
        return await run_command("rabbitmqctl", "-q", *args, within=60)
    except (OSError, AssertionError) as exc:
        pytest.fail(f"{exc}\n{RABBITMQCTL_FIX}")


# --- the service processes --------------------------------------------------------------------


@dataclass
class ServiceProcess:
    name: str
    command: str
    port: int
    log_path: Path
    popen: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(text)


class Deployment:
    """The running processes of one deployment, and what an operator does with them."""

    def __init__(
        self, database: str, prefix: str, workdir: Path, *, read_only_root: bool = False
    ) -> None:
        self.database = database
        self.database_url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{database}".replace(
            "postgresql://", "postgresql+asyncpg://"
        )
        self.prefix = prefix
        self.workdir = workdir
        self.read_only_root = read_only_root
        self.secret_key = secrets.token_hex(24)
        self.api_tokens: list[str] = []
        self.webhook_port = free_port()
        self.processes: dict[str, ServiceProcess] = {}
        self.stopped: list[ServiceProcess] = []  # killed or replaced, kept for their logs
        self._starts: Counter[str] = Counter()
        self._settings: dict[str, Mapping[str, str]] = {}  # given to start(), kept for restarts

    def environment(self, port: int | None = None) -> dict[str, str]:
        """The settings every process gets, as SKYHOOK_* variables (as compose passes them)."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SKYHOOK_")}
        values = {
            "DATABASE_URL": self.database_url,
            "AMQP_URL": AMQP_URL,
            "BUS_PREFIX": self.prefix,
            "PUBLIC_URL": f"http://127.0.0.1:{self.webhook_port}",
            "SECRET_KEY": self.secret_key,
            "ALLOW_LOOPBACK_URLS": "true",
            "HOST": "127.0.0.1",
            "LOG_LEVEL": "INFO",
            "MAX_ANALYSES_PER_OBJ_PER_USER": "500",
            "DISPATCH_CONCURRENCY": str(DISPATCH_CONCURRENCY),
            "DISPATCH_PREFETCH": str(DISPATCH_CONCURRENCY),
            "DISPATCH_TIMEOUT_SECONDS": "4",
            "DISPATCH_RETRY_DELAYS_SECONDS": "0.2,0.5,1,1,2",
            "DISPATCH_POLL_INTERVAL_SECONDS": "0.1",
            "DISPATCH_REAP_MARGIN_SECONDS": "0.5",
            # The safety net for lost messages stays out of reach of the tests: a message the
            # bus or the outbox loses makes a test time out instead of being quietly re-sent.
            "DISPATCH_REQUEUE_AFTER_SECONDS": "600",
            "SWEEP_INTERVAL_SECONDS": "0.25",
        }
        if port is not None:
            values["PORT"] = str(port)
        return {**inherited, **{f"SKYHOOK_{k}": v for k, v in values.items()}}

    def standalone_environment(self, port: int, settings: Mapping[str, str]) -> dict[str, str]:
        """An analysis service's settings: where it listens, and ``settings`` only."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SKYHOOK_")}
        values = {"HOST": "127.0.0.1", "PORT": str(port), "LOG_LEVEL": "INFO", **settings}
        return {**inherited, **{f"SKYHOOK_{k}": v for k, v in values.items()}}

    async def cli(self, *args: str) -> str:
        return await run_command(str(SKYHOOK), *args, env=self.environment())

    # --- processes ---

    def start(self, name: str, settings: Mapping[str, str] | None = None) -> ServiceProcess:
        """Start a service process; ``settings``: extra ``SKYHOOK_*`` settings (without the
        prefix), the only ones a standalone analysis service gets besides where it listens."""
        command = "dispatcher" if name in DISPATCHERS else name
        port = self.webhook_port if name == "webhook-receiver" else free_port()
        if settings is not None:
            self._settings[name] = settings
        extra = self._settings.get(name, {})
        if name in STANDALONE:
            env = self.standalone_environment(port, extra)
        else:
            env = {**self.environment(port), **{f"SKYHOOK_{k}": v for k, v in extra.items()}}
        argv = [str(SKYHOOK), command]
        self._starts[name] += 1
        suffix = "" if self._starts[name] == 1 else f".{self._starts[name]}"
        log_path = self.workdir / f"{name}{suffix}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                read_only_root(argv) if self.read_only_root else argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_test_run,
            )
        self.processes[name] = ServiceProcess(name, command, port, log_path, popen)
        return self.processes[name]

    async def wait_ready(self, names: Iterable[str] | None = None, within: float = 30) -> None:
        """Until every named process answers 200 on /readyz (database and bus connected)."""
        pending = set(self.processes if names is None else names)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:

            async def all_ready() -> bool:
                for name in sorted(pending):
                    process = self.processes[name]
                    if process.popen.poll() is not None:
                        raise AssertionError(
                            f"{name} exited with {process.popen.returncode}:\n{process.log_tail()}"
                        )
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with http.get(f"{process.url}/readyz") as response:
                            if response.status == 200:
                                pending.discard(name)
                return not pending

            try:
                await eventually(all_ready, "every process ready", within, every=0.1)
            except AssertionError:
                raise AssertionError(
                    f"not ready after {within} s: {sorted(pending)}\n{self.log_tails()}"
                ) from None

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        if process.popen.poll() is None:
            process.popen.send_signal(sig)
            process.popen.wait(timeout=10)
        self.stopped.append(process)

    async def restart(self, name: str) -> None:
        self.start(name)
        await self.wait_ready([name], within=STARTUP_SECONDS)

    def stop_all(self) -> None:
        """SIGTERM everything, then SIGKILL what has not exited within a few seconds."""
        running = [p for p in self.processes.values() if p.popen.poll() is None]
        for process in running:
            process.popen.terminate()
        deadline = time.monotonic() + 5
        for process in running:
            try:
                process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(timeout=10)
        self.stopped.extend(self.processes.values())
        self.processes.clear()

    def pids(self) -> set[int]:
        return {p.popen.pid for p in self.processes.values()}

    def url(self, name: str) -> str:
        return self.processes[name].url

    # --- logs ---

    def log_paths(self) -> list[Path]:
        return [p.log_path for p in [*self.stopped, *self.processes.values()]]

    def log_tails(self) -> str:
        every = [*self.stopped, *self.processes.values()]
        return "\n".join(f"--- {p.log_path.name} ---\n{p.log_tail()}" for p in every)

    def log_entries(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines of every run of a process (each line must be JSON)."""
        entries = []
        for process in [*self.stopped, *self.processes.values()]:
            if process.name == name:
                for line in process.log_path.read_text().splitlines():
                    try:
                        entries.append(json.loads(line))
                    except ValueError:
                        raise AssertionError(f"not a JSON log line: {line!r}") from None
        return entries

    # --- the broker ---

    async def broker_connections(self) -> dict[str, int]:
        """This deployment's broker connections: connection pid → the client's process id."""
        listing = await rabbitmqctl(
            "list_connections", "pid", "client_properties", "--no-table-headers"
        )
        named = re.compile(r'\{"connection_name","' + re.escape(self.prefix) + r' pid (\d+)"\}')
        found = {}
        for line in listing.splitlines():
            match = named.search(line)
            if match:
                found[line.split("\t", 1)[0]] = int(match.group(1))
        return found

    async def cut_broker_connections(self) -> set[int]:
        """Have the broker drop every connection of this deployment at once, as a broker
        restart or a network cut would; returns the process ids that lost their connection."""
        connections = await self.broker_connections()
        await asyncio.gather(
            *(
                rabbitmqctl("close_connection", pid, "test: simulated network cut")
                for pid in connections
            )
        )
        return set(connections.values())

    async def queue_depth(self, queue: str) -> int:
        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel()
            declared = await channel.declare_queue(f"{self.prefix}.{queue}", passive=True)
            return int(declared.declaration_result.message_count or 0)
        finally:
            await connection.close()

    # --- the database, read directly by the operator ---

    async def count(self, sql: str) -> int:
        connection = await asyncpg.connect(_plain_dsn(self.database_url))
        try:
            return int(await connection.fetchval(sql))
        finally:
            await connection.close()


def _plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _pg_admin(sql: str) -> None:
    connection = await asyncpg.connect(_plain_dsn(PG_ADMIN_URL))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _names_under(kind: str, prefix: str) -> list[str]:
    listing = await rabbitmqctl(f"list_{kind}", "name", "--no-table-headers")
    return [n.strip() for n in listing.splitlines() if n.strip().startswith(f"{prefix}.")]


async def _delete_bus_names(prefix: str) -> None:
    """Every queue and exchange of the run, whichever process declared it."""
    queues = await _names_under("queues", prefix)
    exchanges = await _names_under("exchanges", prefix)
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        for name in queues:
            await channel.queue_delete(name)
        for name in exchanges:
            await channel.exchange_delete(name)
    finally:
        await connection.close()


@asynccontextmanager
async def fresh_deployment(
    workdir: Path, label: str, *, read_only_root: bool = False
) -> AsyncIterator[Deployment]:
    """A deployment with a migrated database and a bus prefix of its own (both named after
    ``label``), no process started yet. On exit every process started on it is stopped and
    its database and bus names are dropped."""
    await rabbitmqctl("list_connections", "pid", "--no-table-headers")  # usable, or a clear fail
    database = f"skyhook_{label}_{uuid.uuid4().hex[:10]}"
    prefix = f"{label}-{uuid.uuid4().hex[:8]}"
    running = Deployment(database, prefix, workdir, read_only_root=read_only_root)
    await _pg_admin(f'CREATE DATABASE "{database}"')
    try:
        await running.cli("db", "upgrade")
        yield running
    finally:
        running.stop_all()
        try:
            await _delete_bus_names(running.prefix)
        finally:
            await _pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployment(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    async with fresh_deployment(tmp_path_factory.mktemp("ops"), "ops") as running:
        for name in SERVICES:
            running.start(name)
        await running.wait_ready(within=STARTUP_SECONDS)
        yield running


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """A failing test shows the last log lines of every service process."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for running in getattr(item, "funcargs", {}).values():
            if isinstance(running, Deployment):
                report.sections.append(("service process logs", running.log_tails()))


# --- a user's view: the HTTP API ----------------------------------------------------------------


async def user_api(deployment: Deployment, group: str) -> ApiClient:
    """An astronomer provisioned by the operator's ``skyhook token create``."""
    token = (
        await deployment.cli(
            "token",
            "create",
            "--username",
            f"astro-{uuid.uuid4().hex[:8]}",
            "--acl",
            "Run Analyses",
            "--acl",
            "Upload Data",
            "--acl",
            "Manage Analysis Services",
            "--group",
            group,
        )
    ).strip()
    deployment.api_tokens.append(token)
    return ApiClient.at(deployment.url("gateway"), TokenUser(token), timeout=30)


async def source_with_photometry(api: ApiClient, group_id: int, points: int = 4) -> str:
    instrument = {"name": f"ZTF-{uuid.uuid4().hex[:6]}", "filters": ["ztfg", "ztfr"]}
    instrument_id = (await api.ok("POST", "/api/instrument", json=instrument))["id"]
    obj_id = f"ZTF25{uuid.uuid4().hex[:8]}"
    source = {"id": obj_id, "ra": 150.1, "dec": 2.2, "group_ids": [group_id]}
    await api.ok("POST", "/api/sources", json=source)
    photometry = {
        "obj_id": obj_id,
        "instrument_id": instrument_id,
        "mjd": [59001.5 + 2.5 * n for n in range(points)],
        "filter": ["ztfg" if n % 2 == 0 else "ztfr" for n in range(points)],
        "flux": [100.0 + 10 * n for n in range(points)],
        "fluxerr": [5.0] * points,
        "zp": 25.0,
        "magsys": "ab",
        "group_ids": [group_id],
    }
    await api.ok("POST", "/api/photometry", json=photometry)
    return obj_id


# --- the analysis service, in the test process ----------------------------------------------------


def tiny_png() -> bytes:
    """A valid 1x1 grey PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )


def analysis_service(webhook: Callable[[dict[str, Any]], dict[str, Any]]) -> FakeService:
    """The test's analysis service: answers 200 after a short random delay and calls back with
    ``webhook(request payload)`` after another (see ``tests.support.fake_service``)."""
    return FakeService(
        lambda call: webhook(call.payload), answer_delay=(0.02, 0.15), callback_delay=(0.05, 0.5)
    )
