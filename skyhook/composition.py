"""The composition root: builds every service from settings and wires them together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from aiohttp import web

from dispatcher import running_dispatcher
from dispatcher.triggers import declare_trigger_queue, running_triggers
from gateway.app import create_gateway_app
from gateway.web_session import ONE_TIME_LINKS, OneTimeLinks
from shared.background import background
from shared.db.migrate import upgrade_async
from shared.observability import create_operations_app
from shared.resources import Resources, open_resources
from shared.settings import Settings
from summary_service import declare_summary_queue, running_summary_service
from webhook_receiver.app import create_webhook_app

log = logging.getLogger("skyhook")

# Services whose handlers write outbox rows; each process of these runs a relay (PostgreSQL's
# SKIP LOCKED keeps concurrent relays apart).
OUTBOX_WRITERS = frozenset({"gateway", "dispatcher", "webhook-receiver", "summary-service"})


@asynccontextmanager
async def outbox_relay(resources: Resources) -> AsyncIterator[None]:
    """Relay outbox rows to the bus while the block runs (restarted if it ever crashes).

    Enter it after the process's consumers have subscribed: rows left from a previous run are
    published at once, and a message no queue is bound to yet ends among the dead letters.
    """
    async with background("outbox-relay", resources.outbox.run):
        yield


async def _start_site(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("listening on http://%s:%d", host, port)
    return runner


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = await _start_site(app, host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def run_embedded(settings: Settings, *, demo: bool = False) -> None:
    """All services in one process: the embedded default for a single machine.

    With ``demo`` the SN fitter and the LLM summarizer run in the same process too, and the
    demo data is loaded through the API.
    """
    update: dict[str, object] = {"allow_loopback_urls": True, "allow_private_urls": True}
    if "public_url" not in settings.model_fields_set:  # callbacks come back to this process
        update["public_url"] = f"http://{settings.host}:{settings.port}"
    settings = settings.model_copy(update=update)
    await upgrade_async(settings.database_url)
    async with open_resources(settings) as resources, AsyncExitStack() as stack:
        await stack.enter_async_context(running_dispatcher(resources))
        await stack.enter_async_context(running_triggers(resources))
        await stack.enter_async_context(running_summary_service(resources))
        await stack.enter_async_context(outbox_relay(resources))
        gateway = create_gateway_app(resources)
        runners = [await _start_site(gateway, settings.host, settings.port)]
        try:
            if demo:
                runners += await _start_demo(resources, settings, gateway[ONE_TIME_LINKS])
            await asyncio.Event().wait()
        finally:
            for runner in reversed(runners):
                await runner.cleanup()


async def _start_demo(
    resources: Resources, settings: Settings, links: OneTimeLinks
) -> list[web.AppRunner]:
    from skyhook.demo import load_demo, welcome
    from sn_fitter.app import DEFAULT_PORT as FITTER_PORT
    from sn_fitter.app import FitterSettings, create_app
    from summary_service.summarizer import DEFAULT_PORT as SUMMARIZER_PORT
    from summary_service.summarizer import SummarizerConfig, create_summarizer_app

    runners = [
        await _start_site(create_app(FitterSettings.from_env()), settings.host, FITTER_PORT),
        await _start_site(
            create_summarizer_app(SummarizerConfig(settings)), settings.host, SUMMARIZER_PORT
        ),
    ]
    base_url = f"http://{settings.host}:{settings.port}"
    info = await load_demo(
        resources,
        base_url,
        sn_fitter_url=f"http://{settings.host}:{FITTER_PORT}/analysis/sn_fit",
        summarizer_url=f"http://{settings.host}:{SUMMARIZER_PORT}/summarize",
    )
    print(welcome(info, base_url), flush=True)
    # Printed, never opened: like a notebook server's token URL. The code works once.
    print(f"Web app (one-time sign-in link): {base_url}/login?code={links.issue(info.token)}")
    return runners


def _service_app(name: str, resources: Resources) -> web.Application:
    """The HTTP app a service process serves: its API, or just health, readiness and metrics."""
    if name == "gateway":
        return create_gateway_app(resources)
    if name == "webhook-receiver":
        return create_webhook_app(resources)
    return create_operations_app(resources, name)


async def _serve_sn_fitter(settings: Settings) -> None:
    """The SN fitter is standalone (HTTP only, no database): port 6802 unless SKYHOOK_PORT."""
    from sn_fitter.app import DEFAULT_PORT, FitterSettings, create_app

    port = settings.port if "port" in settings.model_fields_set else DEFAULT_PORT
    await _serve(create_app(FitterSettings.from_env()), settings.host, port)


async def _serve_summarizer(settings: Settings) -> None:
    """The LLM summarizer is standalone (HTTP only, no database): port 7003 unless SKYHOOK_PORT."""
    from summary_service.summarizer import DEFAULT_PORT, SummarizerConfig, create_summarizer_app

    port = settings.port if "port" in settings.model_fields_set else DEFAULT_PORT
    await _serve(create_summarizer_app(SummarizerConfig(settings)), settings.host, port)


async def run_service(name: str, settings: Settings) -> None:
    if name == "sn-fitter":
        await _serve_sn_fitter(settings)
        return
    if name == "summarizer":
        await _serve_summarizer(settings)
        return
    async with open_resources(settings) as resources, AsyncExitStack() as stack:
        if name == "dispatcher":  # subscribed before the relay publishes
            await stack.enter_async_context(running_dispatcher(resources))
            await stack.enter_async_context(running_triggers(resources))
        if name == "summary-service":
            await stack.enter_async_context(running_summary_service(resources))
        if name in OUTBOX_WRITERS:
            # analysis.completed then waits in its queue until the summary service runs.
            await declare_summary_queue(resources.bus)
            await declare_trigger_queue(resources.bus)
            await stack.enter_async_context(outbox_relay(resources))
        if name not in {"gateway", "webhook-receiver", "dispatcher", "summary-service"}:
            raise SystemExit(f"skyhook: the {name} service is not available yet")
        await _serve(_service_app(name, resources), settings.host, settings.port)
