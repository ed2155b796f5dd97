"""The whole analysis pipeline under load, with the raw stack measured in the same run.

    .venv/bin/python bench/pipeline.py [--count 2000] [--rate 300] [--paced-seconds 5]
        [--bus rabbit|memory] [--db postgresql|sqlite] [--concurrency 64] [--sources 100]
        [--profile profile.svg]

What runs where. skyhook runs as ``skyhook run`` does, every service composed in ONE process
(gateway, webhook receiver, dispatcher, summary service, outbox relay), by default on RabbitMQ
and PostgreSQL (a database created for the run and dropped after it, RabbitMQ names under a
unique prefix deleted after it); with ``--split``, the gateway, dispatcher, webhook receiver
and summary service run as four processes, as a deployment runs them. This script is the
outside world, in its own process: the users starting analyses and a SkyPortal-style analysis
service that answers each request and posts its results back at once. The raw stack is
measured afterwards with the same client: an aiohttp hello-world server (also its own
process), aio-pika publish+consume, single-row INSERTs. This script and its hello-world server
run on the event loop skyhook's processes use (uvloop when it is installed), so the raw stack
is the stack skyhook runs on. Its CPU per HTTP request and per PostgreSQL round trip is measured
as fast as it goes and at the paced rate, and the analyses' own requests and round trips are
priced at those figures: what the messages alone cost on this machine, beside what skyhook spent.
The last line sets each of the issue's targets against the run's figure.

Latency is start request → completed: the time this script sent the POST that started the
analysis, to the time the webhook receiver stamped on the row when it completed it
(``last_activity``, written in the committing transaction; same machine, same clock). Reading
it from the database afterwards means measuring does not load the gateway with polls.

Burst: ``--count`` analyses started by ``--concurrency`` concurrent clients, as fast as the
gateway takes them: started/s, completed/s (first start → last completion), p50/p99.
The burst also prints the skyhook process' CPU time and PostgreSQL transactions per analysis.
Paced: ``--rate`` analyses/s for ``--paced-seconds``, each start sent on schedule whatever
the backlog (open loop): p50/p99 under that load; then again at half the rate the burst
completed, where the pipeline keeps up. ``--profile FILE`` records the skyhook process with
py-spy during the burst (``pip install py-spy``; FILE.svg for a flame graph, else collapsed
stacks).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import aiohttp
import asyncpg
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.migrate import upgrade_async
from shared.db.models import DispatchAttempt, ObjAnalysis
from shared.db.session import create_engine, create_session_factory
from shared.runtime.heap import serving_heap
from shared.runtime.settings import load_settings
from skyhook.processes import run_coroutine
from skyhook.provision import create_token
from tests.support.ports import free_port

T = TypeVar("T")

SKYHOOK = Path(sys.executable).with_name("skyhook")
PG_ADMIN = os.environ.get("SKYHOOK_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP = os.environ.get("SKYHOOK_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
FINAL = ("completed", "failure", "timed_out", "cancelled")
RESULTS = {
    "status": "success",
    "message": "fit done",
    "analysis": {"results": {"format": "json", "data": {"chi2": 1.02, "t0": 59015.2}}},
}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- the environment: a database, a RabbitMQ prefix, a folder ----------------------------------


@dataclass
class Environment:
    database_url: str
    amqp_url: str
    prefix: str
    folder: Path
    pg_database: str | None  # created for the run (dropped after it)

    def settings_env(self, port: int, callback_port: int, log_level: str) -> dict[str, str]:
        values = {
            "DATABASE_URL": self.database_url,
            "AMQP_URL": self.amqp_url,
            "BUS_PREFIX": self.prefix,
            "PORT": str(port),
            "PUBLIC_URL": f"http://127.0.0.1:{callback_port}",
            "ARTIFACT_DIR": str(self.folder / "artifacts"),
            "SECRET_KEY": "bench-secret-key",
            "HOST": "127.0.0.1",
            "ALLOW_LOOPBACK_URLS": "true",  # the analysis service is on 127.0.0.1
            "MAX_ANALYSES_PER_OBJ_PER_USER": "1000000",
            "LOG_LEVEL": log_level,
        }
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SKYHOOK_")}
        return {**inherited, **{f"SKYHOOK_{k}": v for k, v in values.items()}}


async def _pg_admin(sql: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def _rabbit_names(prefix: str) -> tuple[list[str], list[str]]:
    """Queues and exchanges under the prefix (rabbitmqctl), or the ones skyhook declares."""
    try:
        listed = [
            subprocess.run(
                ["rabbitmqctl", "-q", f"list_{kind}", "name", "--no-table-headers"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout.split()
            for kind in ("queues", "exchanges")
        ]
        queues, exchanges = ([n for n in names if n.startswith(prefix)] for names in listed)
        return queues, exchanges
    except (OSError, subprocess.SubprocessError):
        queues = [f"{prefix}.{q}" for q in ("dispatcher", "summaries")]
        return [*queues, f"{prefix}.dead-letter"], [f"{prefix}.events", f"{prefix}.dead-letter"]


async def delete_rabbit_prefix(amqp_url: str, prefix: str) -> None:
    queues, exchanges = await asyncio.to_thread(_rabbit_names, prefix)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for name in queues:
            channel = await connection.channel()
            await channel.queue_delete(name)
        for name in exchanges:
            channel = await connection.channel()
            await channel.exchange_delete(name)


@contextlib.asynccontextmanager
async def environment(bus: str, db: str) -> AsyncIterator[Environment]:
    folder = Path(tempfile.mkdtemp(prefix="skyhook-bench-"))
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    pg_database = f"skyhook_bench_{uuid.uuid4().hex[:8]}" if db == "postgresql" else None
    if pg_database is not None:
        await _pg_admin(f'CREATE DATABASE "{pg_database}"')
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        database_url = f"{base}/{pg_database}"
    else:
        database_url = f"sqlite+aiosqlite:///{folder / 'bench.db'}"
    amqp_url = AMQP if bus == "rabbit" else "memory://"
    try:
        await upgrade_async(database_url)
        yield Environment(database_url, amqp_url, prefix, folder, pg_database)
    finally:
        if bus == "rabbit":
            await delete_rabbit_prefix(amqp_url, prefix)
        if pg_database is not None:
            await _pg_admin(f'DROP DATABASE IF EXISTS "{pg_database}" WITH (FORCE)')
        shutil.rmtree(folder, ignore_errors=True)


# --- processes ------------------------------------------------------------------------------


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def wait_listening(port: int, process: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.returncode is not None:
            raise RuntimeError(f"the process stopped:\n{tail(log)}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port}:\n{tail(log)}") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return


@contextlib.asynccontextmanager
async def child(
    args: list[str], env: dict[str, str], port: int, log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=output, stderr=output, stdin=asyncio.subprocess.DEVNULL
        )
    try:
        await wait_listening(port, process, log)
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def running_skyhook(
    args: argparse.Namespace, env: Environment
) -> AsyncIterator[tuple[int, dict[str, int]]]:
    """(gateway port, process id by name): ``skyhook run``, or with ``--split`` one process per
    service, the summary service consuming too (dispatcher and summary service first: their
    queues must exist before the gateway and the webhook receiver publish)."""
    async with contextlib.AsyncExitStack() as stack:
        if not args.split:
            port = free_port()
            command = [str(SKYHOOK), "run", "--port", str(port)]
            settings_env = env.settings_env(port, port, args.log_level)
            log = env.folder / "skyhook.log"
            process = await stack.enter_async_context(child(command, settings_env, port, log))
            yield port, {"skyhook": process.pid}
            return
        services = ("dispatcher", "summary-service", "webhook-receiver", "gateway")
        ports = {name: free_port() for name in services}
        pids = {}
        for name, port in ports.items():
            settings_env = env.settings_env(port, ports["webhook-receiver"], args.log_level)
            log = env.folder / f"{name}.log"
            process = await stack.enter_async_context(
                child([str(SKYHOOK), name], settings_env, port, log)
            )
            pids[name] = process.pid
        yield ports["gateway"], pids


async def pg_transactions(environment: Environment) -> int | None:
    """Transactions committed or rolled back in the run's database so far (PostgreSQL)."""
    if environment.pg_database is None:
        return None
    connection = await asyncpg.connect(PG_ADMIN)
    try:
        return int(
            await connection.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
                environment.pg_database,
            )
        )
    finally:
        await connection.close()


@dataclass(frozen=True)
class StatementWork:
    """What PostgreSQL did for one statement text so far: its calls (each a round trip),
    its execution milliseconds and the shared buffers it touched."""

    calls: int
    exec_ms: float
    buffers: int

    def __sub__(self, before: StatementWork) -> StatementWork:
        return StatementWork(
            self.calls - before.calls,
            self.exec_ms - before.exec_ms,
            self.buffers - before.buffers,
        )


NO_WORK = StatementWork(0, 0.0, 0)


async def pg_statements(environment: Environment) -> dict[str, StatementWork] | None:
    """Statements the server ran in the run's database so far, by text (BEGIN and COMMIT
    included). Needs ``pg_stat_statements`` in the server's ``shared_preload_libraries``;
    None without it."""
    if environment.pg_database is None:
        return None
    connection = await asyncpg.connect(f"{PG_ADMIN.rsplit('/', 1)[0]}/{environment.pg_database}")
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        rows = await connection.fetch(
            "SELECT query, sum(calls)::bigint AS calls, sum(total_exec_time) AS exec_ms, "
            "sum(shared_blks_hit + shared_blks_read)::bigint AS buffers FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1) GROUP BY query",
            environment.pg_database,
        )
    except asyncpg.PostgresError:  # the module is not loaded
        return None
    finally:
        await connection.close()
    return {
        row["query"]: StatementWork(int(row["calls"]), float(row["exec_ms"]), int(row["buffers"]))
        for row in rows
    }


def print_round_trips(
    before: dict[str, StatementWork] | None,
    after: dict[str, StatementWork] | None,
    count: int,
    top: int,
) -> float | None:
    """Prints and returns the round trips per analysis (None when they cannot be counted);
    with ``top``, the statements run most often, with their execution time and buffers."""
    if before is None or after is None:
        print(f"{'':9}PostgreSQL round trips: not counted (pg_stat_statements is not loaded)")
        return None
    work = {query: done - before.get(query, NO_WORK) for query, done in after.items()}
    work = {q: w for q, w in work.items() if w.calls > 0 and "pg_stat_statements" not in q}
    per_analysis = sum(w.calls for w in work.values()) / count
    exec_ms = sum(w.exec_ms for w in work.values()) / count
    buffers = sum(w.buffers for w in work.values()) / count
    print(
        f"{'':9}PostgreSQL round trips: {per_analysis:.2f} per analysis "
        f"(statements' execution {exec_ms * 1000:.0f} us, {buffers:.0f} buffers)"
    )
    if top:
        print(f"{'':11}calls, execution us and buffers per analysis; statement")
    for query, w in sorted(work.items(), key=lambda item: -item[1].calls)[:top]:
        print(
            f"{'':11}{w.calls / count:6.3f} {w.exec_ms * 1000 / count:6.1f} "
            f"{w.buffers / count:6.1f}  {' '.join(query.split())[:100]}"
        )
    return per_analysis


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine so far, all cores (Linux /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """User + system CPU seconds of this process: the users and the analysis service."""
    times = os.times()
    return times.user + times.system


# The outside programs whose share of "the rest" the report names, by process name.
PROGRAMS = {"postgres": "PostgreSQL", "beam.smp": "RabbitMQ", "erl_child_setup": "RabbitMQ"}
PROGRAM_NAMES = tuple(dict.fromkeys(PROGRAMS.values()))


def cpu_of_programs() -> dict[int, tuple[str, float]]:
    """Each PostgreSQL and RabbitMQ process: its program and user + system CPU seconds."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it exited meanwhile
            continue
        name, _, rest = text.partition(" (")[2].rpartition(") ")
        if name in PROGRAMS:
            fields = rest.split()
            seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            found[int(stat.parent.name)] = (PROGRAMS[name], seconds)
    return found


def program_seconds(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds by program between two readings (a process started since counts from 0)."""
    spent: dict[str, float] = {}
    for pid, (program, seconds) in after.items():
        earlier = before.get(pid, (program, 0.0))[1]
        spent[program] = spent.get(program, 0.0) + seconds - earlier
    return spent


def cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds of each process (Linux /proc)."""
    seconds = {}
    for name, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        seconds[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


# --- the analysis service: answers, then posts its results back at once --------------------------


class CallbackService:
    def __init__(self) -> None:
        self.port = free_port()
        self.received = 0
        self.callback_errors: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/analysis"

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=128))
        app = web.Application()
        app.router.add_post("/analysis", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _handle(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.received += 1
        task = asyncio.create_task(self._call_back(payload["callback_url"]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response({"status": "pending", "message": "started"})

    async def _call_back(self, url: str) -> None:
        assert self._http is not None
        try:
            async with self._http.post(url, json=RESULTS) as response:
                if response.status != 200:
                    self.callback_errors.append(f"HTTP {response.status}: {await response.text()}")
        except aiohttp.ClientError as exc:
            self.callback_errors.append(repr(exc))


# --- users of the API ---------------------------------------------------------------------------


@dataclass
class Started:
    analysis_id: int
    sent_at: float  # time.time() just before the request


@dataclass
class Client:
    base_url: str
    token: str
    http: aiohttp.ClientSession
    errors: list[str] = field(default_factory=list)

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"token {self.token}"}
        async with self.http.request(
            method, self.base_url + path, json=body, headers=headers
        ) as response:
            reply = await response.json(content_type=None)
            if response.status != 200:
                raise RuntimeError(f"{method} {path}: HTTP {response.status} {reply}")
            return reply["data"]

    async def start(self, obj_id: str, service_id: int) -> Started | None:
        sent_at = time.time()
        try:
            data = await self.call("POST", f"/api/obj/{obj_id}/analysis/{service_id}", {})
        except (RuntimeError, aiohttp.ClientError) as exc:
            self.errors.append(str(exc))
            return None
        return Started(int(data["id"]), sent_at)


async def set_up_data(client: Client, service_url: str, sources: int) -> tuple[int, list[str]]:
    groups = (await client.call("GET", "/api/groups"))["user_groups"]
    group_id = groups[0]["id"]
    instrument = {"name": f"bench-{uuid.uuid4().hex[:6]}", "filters": ["ztfg", "ztfr"]}
    instrument_id = (await client.call("POST", "/api/instrument", instrument))["id"]
    service = {
        "name": f"bench-{uuid.uuid4().hex[:8]}",
        "display_name": "Bench fitter",
        "url": service_url,
        "authentication_type": "none",
        "analysis_type": "lightcurve_fitting",
        "input_data_types": ["photometry"],
        "timeout": 3600,
        "group_ids": [group_id],
    }
    service_id = (await client.call("POST", "/api/analysis_service", service))["id"]
    obj_ids = []
    for n in range(sources):
        obj_id = f"ZTFbench{n:05d}"
        source = {"id": obj_id, "ra": 10.0 + n * 0.01, "dec": -5.0, "group_ids": [group_id]}
        await client.call("POST", "/api/sources", source)
        points = {
            "obj_id": obj_id,
            "instrument_id": instrument_id,
            "mjd": [59000.0 + d for d in range(5)],
            "filter": ["ztfg", "ztfr", "ztfg", "ztfr", "ztfg"],
            "flux": [100.0, 120.0, 140.0, 110.0, 90.0],
            "fluxerr": [5.0] * 5,
            "zp": 23.9,
            "magsys": "ab",
            "group_ids": [group_id],
        }
        await client.call("POST", "/api/photometry", points)
        obj_ids.append(obj_id)
    return service_id, obj_ids


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    count: int
    start_seconds: float
    started_at: float
    completions: dict[int, float]  # analysis id → completed at (unix seconds)
    statuses: dict[str, int]
    latencies: list[float]
    client_errors: int
    stages: dict[str, list[float]] = field(default_factory=dict)  # seconds spent in each hop
    skyhook_ms: float | None = None  # skyhook's CPU per analysis
    round_trips: float | None = None  # PostgreSQL round trips per analysis

    @property
    def completed_per_second(self) -> float:
        if not self.completions:
            return 0.0
        return len(self.completions) / (max(self.completions.values()) - self.started_at)


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


async def wait_final(engine: AsyncEngine, ids: list[int], within: float) -> None:
    deadline = time.monotonic() + within
    lowest, highest = min(ids), max(ids)
    query = select(ObjAnalysis.id).where(
        ObjAnalysis.id.between(lowest, highest), ObjAnalysis.status.in_(FINAL)
    )
    while time.monotonic() < deadline:
        async with engine.connect() as connection:
            done = len((await connection.execute(query)).all())
        if done >= len(ids):
            return
        await asyncio.sleep(0.1)


STAGES = ("start", "queued", "claimed to done", "of which dispatch")


async def outcome_of(engine: AsyncEngine, started: list[Started], start_seconds: float) -> Outcome:
    """Statuses and latencies, and where the time went: the start request until the gateway
    wrote the row; queued until the dispatcher's claim began; from there until the webhook
    receiver committed the results (the claim's transaction and inputs, the dispatch request,
    the service's callback, the webhook's write), and of that, the dispatch request alone."""
    by_id = {s.analysis_id: s for s in started}
    query = (
        select(
            ObjAnalysis.id,
            ObjAnalysis.status,
            ObjAnalysis.created_at,
            ObjAnalysis.last_activity,
            DispatchAttempt.started_at,
            DispatchAttempt.latency_ms,
        )
        .outerjoin(DispatchAttempt, DispatchAttempt.analysis_id == ObjAnalysis.id)
        .where(ObjAnalysis.id.in_(list(by_id)))
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    statuses: dict[str, int] = {}
    completions: dict[int, float] = {}
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    for row in rows:
        statuses[row.status] = statuses.get(row.status, 0) + 1
        if row.status != "completed":
            continue
        completions[row.id] = done = _epoch(row.last_activity)
        if row.started_at is None or row.latency_ms is None:
            continue
        created, claimed = _epoch(row.created_at), _epoch(row.started_at)
        times = (created - by_id[row.id].sent_at, claimed - created, done - claimed)
        for name, seconds in zip(STAGES, (*times, row.latency_ms / 1000), strict=True):
            stages[name].append(seconds)
    latencies = [completions[i] - by_id[i].sent_at for i in completions]
    first = min((s.sent_at for s in started), default=time.time())
    return Outcome(len(started), start_seconds, first, completions, statuses, latencies, 0, stages)


async def burst(
    client: Client, service_id: int, obj_ids: list[str], count: int, concurrency: int
) -> tuple[list[Started], float]:
    """``count`` starts by ``concurrency`` clients, each sending its next as soon as answered."""
    started: list[Started] = []
    counter = iter(range(count))

    async def worker() -> None:
        for n in counter:
            result = await client.start(obj_ids[n % len(obj_ids)], service_id)
            if result is not None:
                started.append(result)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return started, time.perf_counter() - began


async def paced(
    client: Client, service_id: int, obj_ids: list[str], rate: float, seconds: float
) -> tuple[list[Started], float]:
    """Open loop: start n is sent at t0 + n/rate, however many are still unanswered."""
    began = time.perf_counter()
    results = await paced_calls(
        lambda n: client.start(obj_ids[n % len(obj_ids)], service_id), rate, seconds
    )
    return [r for r in results if r is not None], time.perf_counter() - began


async def paced_calls(
    call: Callable[[int], Coroutine[Any, Any, T]], rate: float, seconds: float
) -> list[T]:
    """Open loop: call n begins at t0 + n/rate, however many are still unanswered."""
    tasks = []
    began = time.perf_counter()
    for n in range(max(1, int(rate * seconds))):
        delay = began + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(call(n)))
    return list(await asyncio.gather(*tasks))


async def measured(
    engine: AsyncEngine, client: Client, run: Callable[[], Awaitable[tuple[list[Started], float]]]
) -> Outcome:
    errors_before = len(client.errors)
    started, start_seconds = await run()
    if started:
        await wait_final(engine, [s.analysis_id for s in started], within=300)
    outcome = await outcome_of(engine, started, start_seconds)
    outcome.client_errors = len(client.errors) - errors_before
    return outcome


# --- the raw stack ------------------------------------------------------------------------------


def serve_hello(port: int) -> None:
    async def hello(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"status": "success", "data": {"id": 1}})

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/hello", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await stop.wait()
        await runner.cleanup()

    run_coroutine(serve())


@dataclass
class PerMessage:
    """CPU milliseconds per message: the side that serves or receives, and the one that sends."""

    served: float
    sent: float


# A message's costs as fast as it goes, and at the paced run's rate.
MessageCosts = tuple[PerMessage, PerMessage]


async def raw_http(
    concurrency: int, count: int, rate: float, seconds: float, folder: Path
) -> tuple[float, MessageCosts]:
    """An aiohttp hello world in its own process, with the benchmark's client: requests/s as
    fast as it goes, and the CPU per request of server and client then and at ``rate``."""
    port = free_port()
    args = [sys.executable, __file__, "--serve-hello", str(port)]
    async with (
        child(args, dict(os.environ), port, folder / "hello.log") as server,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http,
    ):
        url = f"http://127.0.0.1:{port}/hello"

        async def call() -> None:
            async with http.post(url, json={}, headers={"Authorization": "token x"}) as r:
                await r.json()

        async def fast() -> int:
            counter = iter(range(count))

            async def worker() -> None:
                for _ in counter:
                    await call()

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return count

        def served() -> float:
            return cpu_by_process({"server": server.pid})["server"]

        fastest, at_burst = await costed(fast, served)

        async def paced_run() -> int:
            return len(await paced_calls(lambda _: call(), rate, seconds))

        _, at_rate = await costed(paced_run, served)
        return fastest, (at_burst, at_rate)


async def costed(
    messages: Callable[[], Awaitable[int]], served: Callable[[], float]
) -> tuple[float, PerMessage]:
    """Messages/s of ``messages`` (which returns how many it sent), and their CPU: the serving
    side's (``served`` reads its CPU seconds) and this script's, which sent them."""
    served_before, sent_before = served(), own_cpu()
    began = time.perf_counter()
    n = await messages()
    elapsed = time.perf_counter() - began
    served_ms = (served() - served_before) * 1000 / n
    return n / elapsed, PerMessage(served_ms, (own_cpu() - sent_before) * 1000 / n)


async def raw_rabbit(amqp_url: str, prefix: str, count: int) -> float:
    """Persistent messages published with confirms to a quorum queue and consumed with acks."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            f"{prefix}.raw", aio_pika.ExchangeType.TOPIC, durable=True
        )
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=64)
        queue = await consumer.declare_queue(
            f"{prefix}.raw", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, "raw.#")
        done = asyncio.Event()
        seen = 0

        async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen
            json.loads(message.body)
            await message.ack()
            seen += 1
            if seen >= count:
                done.set()

        await queue.consume(handle)
        began = time.perf_counter()
        for start in range(0, count, 500):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            json.dumps({"analysis_id": n}).encode(),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            message_id=str(uuid.uuid4()),
                        ),
                        "raw.requested",
                    )
                    for n in range(start, min(count, start + 500))
                )
            )
        await asyncio.wait_for(done.wait(), 120)
        return count / (time.perf_counter() - began)


async def raw_inserts(
    environment: Environment, concurrency: int, count: int, rate: float, seconds: float
) -> tuple[float, MessageCosts | None]:
    """Single-row INSERTs, each its own transaction, ``concurrency`` connections at once:
    INSERTs/s, and on PostgreSQL the CPU of a round trip, the server's and the client's, then
    and at ``rate``."""
    if environment.pg_database is None:
        return await _raw_sqlite_inserts(environment.folder / "bench.db", count), None
    base = PG_ADMIN.rsplit("/", 1)[0]
    pool = await asyncpg.create_pool(
        f"{base}/{environment.pg_database}", min_size=concurrency, max_size=concurrency
    )
    statement = "INSERT INTO raw_rows (body) VALUES ($1)"

    def served() -> float:
        return program_seconds({}, cpu_of_programs()).get("PostgreSQL", 0.0)

    async with pool:
        await pool.execute("CREATE TABLE raw_rows (id bigserial PRIMARY KEY, body text)")

        async def fast() -> int:
            counter = iter(range(count))

            async def worker() -> None:
                async with pool.acquire() as connection:
                    for n in counter:
                        await connection.execute(statement, str(n))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return count

        async def paced_run() -> int:
            return len(await paced_calls(lambda _: pool.execute(statement, "paced"), rate, seconds))

        fastest, at_burst = await costed(fast, served)
        _, at_rate = await costed(paced_run, served)
        return fastest, (at_burst, at_rate)


async def session_inserts(environment: Environment, concurrency: int, count: int) -> float:
    """The same INSERTs through skyhook's session layer (SQLAlchemy AsyncSession, one
    transaction each): what every state change of the pipeline pays on top of the driver."""
    engine = create_engine(environment.database_url, pool_size=concurrency)
    sessions = create_session_factory(engine)
    statement = text("INSERT INTO raw_rows (body) VALUES (:body)")
    counter = iter(range(count))

    async def worker() -> None:
        for n in counter:
            async with sessions.begin() as session:
                await session.execute(statement, {"body": str(n)})

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    await engine.dispose()
    return count / elapsed


async def _raw_sqlite_inserts(path: Path, count: int) -> float:
    import aiosqlite

    async with aiosqlite.connect(path) as connection:
        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.execute("CREATE TABLE raw_rows (id INTEGER PRIMARY KEY, body TEXT)")
        began = time.perf_counter()
        for n in range(count):
            await connection.execute("INSERT INTO raw_rows (body) VALUES (?)", (str(n),))
            await connection.commit()
        return count / (time.perf_counter() - began)


# --- the run ------------------------------------------------------------------------------------


def load_average() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def report(label: str, outcome: Outcome) -> None:
    p50 = percentile(outcome.latencies, 0.50) * 1000
    p99 = percentile(outcome.latencies, 0.99) * 1000
    started_rate = outcome.count / outcome.start_seconds if outcome.start_seconds else 0
    print(
        f"{label:<8} {outcome.count:>6} started {started_rate:>7.0f}/s   completed "
        f"{outcome.completed_per_second:>7.0f}/s   latency p50 {p50:>7.1f} ms  p99 {p99:>7.1f} ms"
        f"   statuses {outcome.statuses}"
        + (f"   client errors {outcome.client_errors}" if outcome.client_errors else "")
        + f"   load average {load_average()}"
    )
    hops = "  ".join(
        f"{name} {percentile(times, 0.5) * 1000:.0f}/{percentile(times, 0.99) * 1000:.0f}"
        for name, times in outcome.stages.items()
        if times
    )
    if hops:
        print(f"{'':9}where the time went, p50/p99 ms: {hops}")


@contextlib.asynccontextmanager
async def profiling(pid: int, output: str | None) -> AsyncIterator[None]:
    if not output:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    process = await asyncio.create_subprocess_exec(
        spy,
        "record",
        "--pid",
        str(pid),
        "--output",
        output,
        "--rate",
        "200",
        "--nonblocking",
        "--gil",  # only threads holding the GIL: CPU spent in Python, not waiting
        "--format",
        "flamegraph" if output.endswith(".svg") else "raw",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        await process.wait()
        print(f"profile written to {output}")


@dataclass
class Workload:
    """What the users do: start analyses of these sources with this service."""

    engine: AsyncEngine  # for reading the outcome afterwards
    client: Client
    service_id: int
    obj_ids: list[str]
    concurrency: int

    async def burst(self, count: int) -> Outcome:
        return await measured(
            self.engine,
            self.client,
            lambda: burst(self.client, self.service_id, self.obj_ids, count, self.concurrency),
        )

    async def paced(self, rate: float, seconds: float) -> Outcome:
        return await measured(
            self.engine,
            self.client,
            lambda: paced(self.client, self.service_id, self.obj_ids, rate, seconds),
        )


@dataclass(frozen=True)
class Reading:
    """The counters a run's costs are the difference of."""

    cpu: dict[str, float]  # CPU seconds by skyhook process
    machine: float  # the machine's busy CPU seconds
    own: float  # this script's CPU seconds
    programs: dict[int, tuple[str, float]]  # PostgreSQL's and RabbitMQ's processes
    transactions: int | None  # PostgreSQL only
    statements: dict[str, StatementWork] | None  # PostgreSQL with pg_stat_statements only


@dataclass
class Costs:
    """Where a run's CPU and database work went: a reading before it, compared after it."""

    env: Environment
    pids: dict[str, int]

    async def read(self) -> Reading:
        return Reading(
            cpu_by_process(self.pids),
            machine_cpu(),
            own_cpu(),
            cpu_of_programs(),
            await pg_transactions(self.env),
            await pg_statements(self.env),
        )

    async def report(self, before: Reading, count: int, top: int = 0) -> tuple[float, float | None]:
        """Per analysis: skyhook's CPU by process, the machine's, and PostgreSQL's work.
        Returns skyhook's CPU milliseconds and the round trips (if counted) per analysis."""
        after = await self.read()
        cpu = {name: t - before.cpu[name] for name, t in after.cpu.items()}
        machine, own = after.machine - before.machine, after.own - before.own
        parts = ", ".join(f"{name} {t * 1000 / count:.2f}" for name, t in cpu.items())
        total = sum(cpu.values()) * 1000 / count
        print(
            f"{'':9}skyhook CPU per analysis: {total:.2f} ms"
            + (f" ({parts})" if len(cpu) > 1 else "")
        )
        # The rest of the machine's 2 cores: this script (users + the analysis service), and
        # everything else (PostgreSQL, RabbitMQ, the kernel, anything else running).
        rest = machine * 1000 / count - total - own * 1000 / count
        programs = program_seconds(before.programs, after.programs)
        named = {name: programs.get(name, 0.0) * 1000 / count for name in PROGRAM_NAMES}
        other = rest - sum(named.values())
        print(
            f"{'':9}machine CPU per analysis: {machine * 1000 / count:.2f} ms (skyhook "
            f"{total:.2f}, this script's users and service {own * 1000 / count:.2f}, "
            f"the rest {rest:.2f}: "
            + ", ".join(f"{name} {ms:.2f}" for name, ms in named.items())
            + f", the kernel and anything else {other:.2f})"
        )
        if before.transactions is not None and after.transactions is not None:
            per_analysis = (after.transactions - before.transactions) / count
            print(f"{'':9}PostgreSQL transactions: {per_analysis:.1f} per analysis")
        if self.env.pg_database is None:
            return total, None
        return total, print_round_trips(before.statements, after.statements, count, top)


async def measured_burst(
    workload: Workload, args: argparse.Namespace, env: Environment, pids: dict[str, int]
) -> Outcome:
    """The burst, with its costs per analysis."""
    costs = Costs(env, pids)
    before = await costs.read()
    async with profiling_of(args, pids, "burst"):
        outcome = await workload.burst(args.count)
    report("burst", outcome)
    outcome.skyhook_ms, outcome.round_trips = await costs.report(
        before, args.count, args.statements
    )
    return outcome


def profiling_of(
    args: argparse.Namespace, pids: dict[str, int], run: str
) -> contextlib.AbstractAsyncContextManager[None]:
    """The profile of ``--profile-service`` during ``run`` if ``--profile-run`` names it."""
    profiled = pids.get(args.profile_service, next(iter(pids.values())))
    return profiling(profiled, args.profile if args.profile_run == run else None)


async def measured_paced(
    workload: Workload,
    args: argparse.Namespace,
    costs: Costs,
    rate: float,
    profile: contextlib.AbstractAsyncContextManager[None],
) -> Outcome:
    """A paced run, with its costs per analysis (smaller batches than in the burst)."""
    before = await costs.read()
    async with profile:
        outcome = await workload.paced(rate, args.paced_seconds)
    report(f"{rate:g}/s", outcome)
    outcome.skyhook_ms, outcome.round_trips = await costs.report(
        before, outcome.count, args.statements
    )
    return outcome


async def run_pipeline(args: argparse.Namespace, env: Environment) -> dict[str, Outcome]:
    service = CallbackService()
    await service.start()
    try:
        async with running_skyhook(args, env) as (port, pids):
            return await run_workloads(args, env, service, port, pids)
    finally:
        await service.stop()
        if service.callback_errors:
            errors = service.callback_errors
            print(f"callback errors: {len(errors)}, e.g. {errors[0]}")


async def idle_cpu(pids: dict[str, int], seconds: float) -> None:
    """What skyhook's processes spend with nothing to do (timers, polls), in % of one core."""
    before = cpu_by_process(pids)
    await asyncio.sleep(seconds)
    spent = {name: t - before[name] for name, t in cpu_by_process(pids).items()}
    parts = ", ".join(f"{name} {100 * t / seconds:.1f} %" for name, t in spent.items())
    print(f"{'':9}idle CPU over {seconds:g} s: {parts}; load average {load_average()}")


async def analyze(engine: AsyncEngine) -> None:
    """Give the planner the statistics of the tables the warm-up filled, as autovacuum keeps
    them on a live database (on fresh tables it plans for one row: nested loops over arrays)."""
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("ANALYZE"))


async def run_workloads(
    args: argparse.Namespace,
    env: Environment,
    service: CallbackService,
    port: int,
    pids: dict[str, int],
) -> dict[str, Outcome]:
    settings = load_settings(None, database_url=env.database_url, amqp_url="memory://")
    acls = ["Run Analyses", "Upload Data", "Manage Analysis Services"]
    token = await create_token(settings, "bench", acls=acls, groups=["bench"])
    engine = create_engine(env.database_url)
    connector = aiohttp.TCPConnector(limit=max(args.concurrency, 256))
    outcomes: dict[str, Outcome] = {}
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            client = Client(f"http://127.0.0.1:{port}", token, http)
            service_id, obj_ids = await set_up_data(client, service.url, args.sources)
            workload = Workload(engine, client, service_id, obj_ids, args.concurrency)
            report("warm-up", await workload.burst(200))
            await analyze(engine)
            await idle_cpu(pids, seconds=3.0)
            outcomes["burst"] = await measured_burst(workload, args, env, pids)
            costs = Costs(env, pids)
            paced_profile = profiling_of(args, pids, "paced")
            outcomes["paced"] = await measured_paced(
                workload, args, costs, args.rate, paced_profile
            )
            # Where the pipeline keeps up: half of what the burst completed per second.
            half = max(1.0, round(outcomes["burst"].completed_per_second / 2))
            outcomes["half"] = await measured_paced(
                workload, args, costs, half, profiling_of(args, pids, "half")
            )
    finally:
        await engine.dispose()
    return outcomes


@dataclass
class RawStack:
    rates: dict[str, float]  # messages/s by kind, as fast as they go
    http: MessageCosts
    round_trip: MessageCosts | None  # PostgreSQL only


async def raw_stack(args: argparse.Namespace, env: Environment) -> RawStack:
    count, rate, seconds = max(args.count, 5000), args.rate, args.paced_seconds
    http_rate, http = await raw_http(args.concurrency, count, rate, seconds, env.folder)
    insert_rate, round_trip = await raw_inserts(env, 16, 5000, rate, seconds)
    rates = {"http": http_rate, "insert": insert_rate}
    rates["session"] = await session_inserts(env, 16, 5000)
    if args.bus == "rabbit":
        rates["rabbit"] = await raw_rabbit(env.amqp_url, env.prefix, 5000)
    return RawStack(rates, http, round_trip)


def print_raw(args: argparse.Namespace, outcomes: dict[str, Outcome], raw: RawStack) -> None:
    completed = outcomes["burst"].completed_per_second
    print("raw stack, same client and machine (ratio = completed analyses/s : raw rate):")
    lines = [
        ("http", "aiohttp hello world, req/s", "an analysis is 3 HTTP requests"),
        ("insert", f"single-row INSERT/s, raw {args.db}", ""),
        ("session", "same INSERT/s through skyhook's sessions", "SQLAlchemy AsyncSession"),
        ("rabbit", "aio-pika publish+consume, msg/s", "an analysis is 2 messages"),
    ]
    for key, label, note in lines:
        if key in raw.rates:
            ratio = completed / raw.rates[key]
            print(f"  {label:<42} {raw.rates[key]:>8.0f}   ratio {ratio:.4f}  {note}")
    print_raw_costs(args, outcomes, raw)


def print_raw_costs(args: argparse.Namespace, outcomes: dict[str, Outcome], raw: RawStack) -> None:
    """The raw stack's CPU per message, as fast as it goes and at the paced rate, and what an
    analysis's own messages cost at those prices: how much of skyhook's CPU per analysis is
    the price of its messages on this machine, before any work."""
    print(
        f"raw stack's CPU per message, ms, served/sent: as fast as it goes | at {args.rate:g}/s"
        " paced"
    )
    kinds = [("aiohttp hello-world request", raw.http)]
    if raw.round_trip is not None:
        kinds.append(("PostgreSQL single-row INSERT round trip", raw.round_trip))
    for label, (fast, paced) in kinds:
        print(
            f"  {label:<42} {fast.served:.3f}/{fast.sent:.3f} | {paced.served:.3f}/{paced.sent:.3f}"
        )
    for name, index in (("burst", 0), ("paced", 1)):
        outcome = outcomes[name]
        if outcome.skyhook_ms is None or outcome.round_trips is None or raw.round_trip is None:
            continue
        http = raw.http[index]
        requests = 2 * http.served + http.sent
        trips = outcome.round_trips * raw.round_trip[index].sent
        print(
            f"  an analysis of the {name} run at these prices: 3 HTTP requests (skyhook serves"
            f" 2, sends 1) {requests:.2f} ms + {outcome.round_trips:.2f} round trips"
            f" {trips:.2f} ms = {requests + trips:.2f} ms; skyhook spent {outcome.skyhook_ms:.2f}"
        )


async def run(args: argparse.Namespace) -> None:
    print(
        f"skyhook {'split in 4 processes' if args.split else 'run (one process)'} on "
        f"bus={args.bus} db={args.db}; {args.count} analyses, "
        f"{args.concurrency} concurrent clients, {args.sources} sources; "
        f"load average (1/5/15 min) {load_average()}"
    )
    async with environment(args.bus, args.db) as env:
        # This script is the users and the service: its own collections of its startup heap
        # (80-120 ms each) would show as skyhook's latency. Frozen, as skyhook's are.
        with serving_heap():
            outcomes = await run_pipeline(args, env)
        raw = await raw_stack(args, env)
    print_raw(args, outcomes, raw)
    print_targets(args, outcomes)


def print_targets(args: argparse.Namespace, outcomes: dict[str, Outcome]) -> None:
    """The issue's targets, each against this run's figure: for the embedded default its
    rate; otherwise the split deployment's (CPU and round trips per analysis in the burst and
    at the paced rate: batches are smaller at the paced rate)."""
    burst, paced = outcomes["burst"], outcomes["paced"]
    completed = burst.completed_per_second
    p99 = percentile(paced.latencies, 0.99) * 1000
    rate = f"{args.rate:g}/s"

    def verdict(met: bool) -> str:
        return "met" if met else "NOT met"

    if not args.split and args.db == "sqlite" and args.bus == "memory":
        met = verdict(completed >= 300)
        print(f"target: the embedded default >= 300 completed/s: {met} ({completed:.0f}/s)")
        return
    targets = [
        f">= 1000 completed/s: {verdict(completed >= 1000)} ({completed:.0f}/s)",
        f"p99 < 250 ms at {rate}: {verdict(p99 < 250)} ({p99:.0f} ms)",
    ]
    for name, limit, unit, of in (
        ("skyhook CPU per analysis", 2.0, "ms", lambda o: o.skyhook_ms),
        ("PostgreSQL round trips per analysis", 3.0, "", lambda o: o.round_trips),
    ):
        at_burst, at_rate = of(burst), of(paced)
        if at_burst is None or at_rate is None:
            continue
        targets.append(
            f"{name} <= {limit:g}{unit and ' ' + unit}: in the burst {verdict(at_burst <= limit)}"
            f" ({at_burst:.2f}), at {rate} {verdict(at_rate <= limit)} ({at_rate:.2f})"
        )
    print("targets: " + "; ".join(targets))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--paced-seconds", type=float, default=5.0)
    parser.add_argument("--sources", type=int, default=100)
    parser.add_argument("--bus", choices=("rabbit", "memory"), default="rabbit")
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--statements",
        type=int,
        default=0,
        help="list this many of the statements run most often per analysis in the burst",
    )
    parser.add_argument(
        "--profile-service",
        default="dispatcher",
        help="with --split: which process to profile (dispatcher, webhook-receiver, gateway)",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="gateway, dispatcher, webhook receiver, summary service: four processes (RabbitMQ)",
    )
    parser.add_argument(
        "--profile",
        help="py-spy profile of skyhook during the burst: FILE.svg, or collapsed stacks",
    )
    parser.add_argument(
        "--profile-run",
        choices=("burst", "paced", "half"),
        default="burst",
        help="which run --profile records: the burst, the paced run at --rate, or half rate",
    )
    parser.add_argument("--serve-hello", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.split and args.bus == "memory":
        parser.error("--split needs --bus rabbit: the in-process bus cannot join processes")
    if args.serve_hello:
        serve_hello(args.serve_hello)
        return
    run_coroutine(run(args))


if __name__ == "__main__":
    main()
