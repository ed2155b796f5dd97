"""The composition root: builds every service from settings and wires them together.

Every long-running command runs until its ``stop`` event is set (the command line sets it on
SIGTERM or SIGINT), then stops in order: no new work is taken, in-flight work finishes within
``SKYHOOK_SHUTDOWN_GRACE_SECONDS`` (or is handed back: a row left ``queued`` or ``dispatching``
is sent again after a restart), pools and child processes are closed.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from aiohttp import web

from dispatcher import running_dispatcher
from dispatcher.triggers import declare_trigger_queue, running_triggers
from gateway.app import Mount, create_gateway_app
from gateway.web_session import ONE_TIME_LINKS, OneTimeLinks
from http_edge.operations import create_operations_app
from shared.db.migrate import upgrade_async
from shared.db.types import utcnow
from shared.domain import analysis_lifecycle as lifecycle
from shared.runtime.background import background
from shared.runtime.heap import serving_heap
from shared.runtime.resources import Resources, open_resources
from shared.runtime.settings import CommonSettings, LLMSettings, Settings
from summary_service import declare_summary_queue, running_summary_service
from webhook_receiver.app import create_webhook_app
from webhook_receiver.handler import setup_webhook
from webhook_receiver.routes import WEBHOOK_ROUTES

log = logging.getLogger("skyhook")

# Services whose handlers write outbox rows; each process of these runs a relay (PostgreSQL's
# SKIP LOCKED keeps concurrent relays apart).
OUTBOX_WRITERS = frozenset({"gateway", "dispatcher", "webhook-receiver", "summary-service"})


# Analysis services post their results to the public URL, which is the API's own in the
# embedded default: the gateway serves the webhook receiver's route too.
WEBHOOK = Mount(WEBHOOK_ROUTES, setup_webhook)


def platform_gateway_app(resources: Resources) -> web.Application:
    """The gateway as skyhook serves it (``skyhook run`` and ``skyhook gateway``): its own
    route table and the webhook route."""
    return create_gateway_app(resources, mounts=[WEBHOOK])


class PortInUse(Exception):
    """A port this command must listen on is taken; the message names the option to change."""

    def __init__(self, host: str, port: int, what: str, option: str) -> None:
        super().__init__(
            f"port {port} on {host} ({what}) is already in use; choose another with {option}"
        )


@dataclass(frozen=True)
class Listener:
    """Where one HTTP app listens, what it is, and the option that changes its port."""

    host: str
    port: int
    what: str
    option: str


@dataclass(frozen=True)
class DemoPorts:
    """The demo's helper services follow the API's port unless given: N+1 and N+2."""

    fitter: int
    summarizer: int

    @classmethod
    def following(
        cls, api_port: int, fitter: int | None = None, summarizer: int | None = None
    ) -> DemoPorts:
        return cls(fitter or api_port + 1, summarizer or api_port + 2)


@asynccontextmanager
async def outbox_relay(resources: Resources) -> AsyncIterator[None]:
    """Relay outbox rows to the bus while the block runs (restarted if it ever crashes).

    Enter it after the process's consumers have subscribed: rows left from a previous run are
    published at once (a message no queue is bound to yet would end among the dead letters),
    and so, once, are rows other processes are still handing over: at worst a few duplicates
    when a process starts, which consumers absorb.
    """
    resources.outbox.nudge()  # its first pass sweeps every row, however new
    async with background("outbox-relay", resources.outbox.run):
        try:
            yield
        finally:
            await resources.outbox.stop()


@asynccontextmanager
async def serving(
    app: web.Application, listener: Listener, grace_seconds: float, *, reuse_port: bool = False
) -> AsyncIterator[web.AppRunner]:
    """Serve ``app`` for the duration of the block. On exit the listening socket closes first,
    then requests under way get ``grace_seconds`` to finish, then the app's cleanup runs.
    ``reuse_port``: one of several worker processes listening on the same port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=grace_seconds)
    await runner.setup()
    try:
        try:
            site = web.TCPSite(runner, listener.host, listener.port, reuse_port=reuse_port or None)
            await site.start()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortInUse(listener.host, listener.port, listener.what, listener.option) from None
        log.info("listening on http://%s:%d (%s)", listener.host, listener.port, listener.what)
        yield runner
    finally:
        await runner.cleanup()


async def recover_embedded_work(resources: Resources) -> int:
    """At the start of ``skyhook run`` nothing else can be working on this database: messages of
    the in-process bus died with the previous process, and so did its sends. Rows it left
    ``queued`` are announced again at once, and rows it left ``dispatching`` are requeued (or
    failed when no retry is left), instead of waiting for the lost-message poller or reaper.

    Every such row, however many: the reaper and the announcement take at most
    ``lifecycle.BATCH_LIMIT`` rows at a time, so each is repeated until a batch comes back
    short (rows it moved are not taken again: they were touched at ``now``)."""
    from dispatcher.service import Dispatcher

    dispatcher = Dispatcher(resources)
    now = utcnow()
    released = 0
    while True:
        batch = await dispatcher.reap_stuck(now, window=0.0)
        released += batch
        if batch < lifecycle.BATCH_LIMIT:
            break
    announced: list[int] = []
    while True:
        ids = await lifecycle.announce_due(resources.sessions, now, timedelta(0))
        announced += ids
        if len(ids) < lifecycle.BATCH_LIMIT:
            break
    if released or announced:
        log.info(
            "sending again %d analyses left unsent by the previous run",
            len(set(announced)) or released,
        )
    return len(announced)


async def run_embedded(
    settings: Settings,
    stop: asyncio.Event | None = None,
    *,
    demo: bool = False,
    demo_ports: DemoPorts | None = None,
) -> None:
    """All services in one process until ``stop`` is set: the embedded default.

    With ``demo`` the SN fitter and the LLM summarizer run in the same process too (on
    ``demo_ports``, by default the API's port + 1 and + 2), and the demo data is loaded
    through the API.
    """
    update: dict[str, object] = {"allow_loopback_urls": True, "allow_private_urls": True}
    if "public_url" not in settings.model_fields_set:  # callbacks come back to this process
        update["public_url"] = f"http://{settings.host}:{settings.port}"
    settings = settings.model_copy(update=update)
    stop = stop or asyncio.Event()
    grace = settings.shutdown_grace_seconds
    await upgrade_async(settings.database_url)
    async with open_resources(settings) as resources, AsyncExitStack() as stack:
        dispatcher = await stack.enter_async_context(running_dispatcher(resources))
        await stack.enter_async_context(running_triggers(resources))
        await stack.enter_async_context(running_summary_service(resources))
        await recover_embedded_work(resources)
        await stack.enter_async_context(outbox_relay(resources))
        api = Listener(settings.host, settings.port, "the API", "--port")
        # Entered before the demo services, so it is closed after them: callbacks of the fits
        # that finish during the grace period still reach it.
        gateway = platform_gateway_app(resources)
        await stack.enter_async_context(serving(gateway, api, grace))
        if demo:
            ports = demo_ports or DemoPorts.following(api.port)
            await _start_demo(stack, resources, ports, gateway[ONE_TIME_LINKS])
        with serving_heap():
            await stop.wait()
        log.info("stopping: no new dispatches; in-flight work has %.0f s to finish", grace)
        await dispatcher.stop()


async def _start_demo(
    stack: AsyncExitStack, resources: Resources, ports: DemoPorts, links: OneTimeLinks
) -> None:
    from llm_summarizer.app import SummarizerConfig, create_summarizer_app
    from skyhook.demo import load_demo, welcome
    from sn_fitter.app import FitterSettings, create_app

    settings = resources.settings
    host, grace = settings.host, settings.shutdown_grace_seconds
    following = "or --port N: the demo services then use N+1 and N+2"
    fitter = Listener(host, ports.fitter, "the demo SN fitter", f"--fitter-port ({following})")
    summarizer = Listener(
        host, ports.summarizer, "the demo summarizer", f"--summarizer-port ({following})"
    )
    fitter_settings = FitterSettings.from_env(stop_grace_seconds=grace)
    await stack.enter_async_context(serving(create_app(fitter_settings), fitter, grace))
    summarizer_config = SummarizerConfig(settings, stop_grace_seconds=grace)
    await stack.enter_async_context(
        serving(create_summarizer_app(summarizer_config), summarizer, grace)
    )
    base_url = f"http://{host}:{settings.port}"
    info = await load_demo(
        resources,
        base_url,
        sn_fitter_url=f"http://{host}:{ports.fitter}/analysis/sn_fit",
        summarizer_url=f"http://{host}:{ports.summarizer}/summarize",
    )
    print(welcome(info, base_url), flush=True)
    # Printed, never opened: like a notebook server's token URL. The code works once.
    print(f"Web app (one-time sign-in link): {base_url}/login?code={links.issue(info.token)}")


def _service_app(name: str, resources: Resources) -> web.Application:
    """The HTTP app a service process serves: its API, or just health, readiness and metrics."""
    if name == "gateway":
        return platform_gateway_app(resources)
    if name == "webhook-receiver":
        return create_webhook_app(resources)
    return create_operations_app(resources, name)


def _listener(name: str, settings: CommonSettings, default_port: int | None = None) -> Listener:
    port = settings.port
    if default_port is not None and "port" not in settings.model_fields_set:
        port = default_port
    return Listener(settings.host, port, f"the {name}", "--port or SKYHOOK_PORT")


async def _serve_until(
    app: web.Application, listener: Listener, settings: CommonSettings, stop: asyncio.Event
) -> None:
    async with serving(app, listener, settings.shutdown_grace_seconds):
        await stop.wait()
        log.info("stopping")


async def _serve_sn_fitter(settings: CommonSettings, stop: asyncio.Event) -> None:
    """The SN fitter is standalone (HTTP only, no database): port 6802 unless SKYHOOK_PORT."""
    from sn_fitter.app import DEFAULT_PORT, FitterSettings, create_app

    app = create_app(FitterSettings.from_env(stop_grace_seconds=settings.shutdown_grace_seconds))
    await _serve_until(app, _listener("SN fitter", settings, DEFAULT_PORT), settings, stop)


async def _serve_summarizer(settings: LLMSettings, stop: asyncio.Event) -> None:
    """The LLM summarizer is standalone (HTTP only, no database): port 7003 unless SKYHOOK_PORT."""
    from llm_summarizer.app import DEFAULT_PORT, SummarizerConfig, create_summarizer_app

    config = SummarizerConfig(settings, stop_grace_seconds=settings.shutdown_grace_seconds)
    app = create_summarizer_app(config)
    await _serve_until(app, _listener("summarizer", settings, DEFAULT_PORT), settings, stop)


async def run_service(
    name: str,
    settings: CommonSettings,
    stop: asyncio.Event | None = None,
    *,
    reuse_port: bool = False,
) -> None:
    """One service in this process until ``stop`` is set (or the task is cancelled).

    ``settings`` is the service's own model (``shared.runtime.settings.SERVICE_SETTINGS``); the full
    ``Settings`` serves every service. ``reuse_port``: this process is one of several workers
    sharing the port."""
    stop = stop or asyncio.Event()
    if name == "sn-fitter":
        await _serve_sn_fitter(settings, stop)
        return
    if name == "summarizer":
        if not isinstance(settings, LLMSettings):
            raise TypeError("the summarizer runs on SummarizerSettings (or the full Settings)")
        await _serve_summarizer(settings, stop)
        return
    if name not in {"gateway", "webhook-receiver", "dispatcher", "summary-service"}:
        raise SystemExit(f"skyhook: the {name} service is not available yet")
    if not isinstance(settings, Settings):
        raise TypeError(f"the {name} runs on the platform's Settings")
    async with open_resources(settings) as resources, AsyncExitStack() as stack:
        dispatcher = None
        if name == "dispatcher":  # subscribed before the relay publishes
            dispatcher = await stack.enter_async_context(running_dispatcher(resources))
            await stack.enter_async_context(running_triggers(resources))
        if name == "summary-service":
            await stack.enter_async_context(running_summary_service(resources))
        if name in OUTBOX_WRITERS:
            # analysis.completed then waits in its queue until the summary service runs.
            await declare_summary_queue(resources.bus)
            await declare_trigger_queue(resources.bus)
            await stack.enter_async_context(outbox_relay(resources))
        listener = _listener(name, settings)
        grace = settings.shutdown_grace_seconds
        app = _service_app(name, resources)
        await stack.enter_async_context(serving(app, listener, grace, reuse_port=reuse_port))
        with serving_heap():
            await stop.wait()
        log.info("stopping")
        if dispatcher is not None:
            await dispatcher.stop()
