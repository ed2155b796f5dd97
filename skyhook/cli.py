"""The ``skyhook`` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from shared.runtime.settings import (
    SERVICE_SETTINGS,
    CommonSettings,
    Settings,
    SettingsError,
    load_settings,
    require_own_secret_key,
)

S = TypeVar("S", bound=CommonSettings)


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    return _settings_of(Settings, args, **overrides)


def _settings_of(model: type[S], args: argparse.Namespace, **overrides: object) -> S:
    try:
        return load_settings(getattr(args, "config", None), model=model, **overrides)
    except SettingsError as exc:
        print(f"skyhook: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from shared.db.migrate import upgrade

    settings = _settings(args)
    upgrade(settings.database_url, args.revision)
    print(f"database at revision {args.revision}", file=sys.stderr)
    return 0


def _cmd_token_create(args: argparse.Namespace) -> int:
    from skyhook.provision import create_token

    settings = _settings(args)
    try:
        token = asyncio.run(
            create_token(
                settings, args.username, admin=args.admin, acls=args.acl, groups=args.group
            )
        )
    except ValueError as exc:
        print(f"skyhook: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _cmd_dead_letters(args: argparse.Namespace) -> int:
    from skyhook import operations

    settings = _settings(args)
    try:
        if args.dead_letters_command == "list":
            asyncio.run(operations.list_dead_letters(settings, args.limit))
        else:
            asyncio.run(operations.replay_dead_letters(settings, args.id))
    except (ValueError, ConnectionError) as exc:
        print(f"skyhook: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_phot_stats_recompute(args: argparse.Namespace) -> int:
    from shared.science.phot_stats import recompute_database

    count = asyncio.run(recompute_database(_settings(args).database_url))
    print(f"photometry statistics recomputed for {count} sources", file=sys.stderr)
    return 0


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _run_until_signalled(
    main: Callable[[asyncio.Event], Awaitable[None]], event_loop: str = "auto"
) -> int:
    """Run a long-running command until SIGTERM or SIGINT, then let it stop in order.

    Both signals set the ``stop`` event the command waits on; it then stops taking work, gives
    in-flight work its grace period and closes everything. A port already in use is reported
    in one line (exit 1). ``event_loop``: ``auto`` (uvloop when installed) or ``asyncio``.
    """
    from skyhook.composition import PortInUse
    from skyhook.processes import run_coroutine

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop.set)
        try:
            await main(stop)
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)

    try:
        run_coroutine(runner(), event_loop)
    except PortInUse as exc:
        print(f"skyhook: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from skyhook.composition import DemoPorts, run_embedded

    # One process: SKYHOOK_WORKERS is for the gateway and webhook receiver run alone.
    overrides: dict[str, object] = {"port": args.port, "workers": 1}
    settings = _settings(args, **overrides)
    ports = DemoPorts.following(args.port, args.fitter_port, args.summarizer_port)
    return _run_until_signalled(
        lambda stop: run_embedded(settings, stop, demo=args.demo, demo_ports=ports),
        settings.event_loop,
    )


def _cmd_service(args: argparse.Namespace) -> int:
    from skyhook.composition import run_service

    name: str = args.command
    model = SERVICE_SETTINGS[name]
    overrides: dict[str, object] = {"port": args.port} if args.port else {}
    if name in MULTI_WORKER_SERVICES:
        if args.workers is not None:
            overrides["workers"] = args.workers
    elif model is Settings:
        overrides["workers"] = 1  # SKYHOOK_WORKERS does not apply to this service
    settings = _settings_of(model, args, **overrides)
    if isinstance(settings, Settings):
        try:
            require_own_secret_key(settings)
        except SettingsError as exc:
            print(f"skyhook: {exc}", file=sys.stderr)
            return 2
        supervisor = getattr(args, "worker_of", None)
        if settings.workers > 1 and supervisor is None:
            return _supervise_workers(args, settings)
        if supervisor is not None:
            return _run_until_signalled(
                lambda stop: _run_worker(name, settings, stop, supervisor), settings.event_loop
            )
    return _run_until_signalled(lambda stop: run_service(name, settings, stop), settings.event_loop)


def _supervise_workers(args: argparse.Namespace, settings: Settings) -> int:
    """Start ``settings.workers`` copies of this command on one port and wait for them."""
    from skyhook.composition import PortInUse
    from skyhook.processes import check_port_free, supervise

    if not check_port_free(settings.host, settings.port):
        what, option = f"the {args.command}", "--port or SKYHOOK_PORT"
        taken = PortInUse(settings.host, settings.port, what, option)
        print(f"skyhook: {taken}", file=sys.stderr)
        return 1
    argv = [sys.executable, "-m", "skyhook"]
    if args.config:
        argv += ["--config", args.config]
    argv += [args.command, "--port", str(settings.port), "--workers", str(settings.workers)]
    argv += ["--worker-of", str(os.getpid())]
    return supervise(argv, settings.workers)


async def _run_worker(name: str, settings: Settings, stop: asyncio.Event, supervisor: int) -> None:
    """One of several worker processes: shares the port, stops with its supervisor."""
    from skyhook.composition import run_service
    from skyhook.processes import stop_when_orphaned

    watch = asyncio.create_task(stop_when_orphaned(supervisor, stop))
    try:
        await run_service(name, settings, stop, reuse_port=True)
    finally:
        watch.cancel()


SERVICES = (
    "gateway",
    "dispatcher",
    "webhook-receiver",
    "summary-service",
    "sn-fitter",
    "summarizer",
)
# Services that can run several worker processes on one port (--workers, SKYHOOK_WORKERS).
MULTI_WORKER_SERVICES = ("gateway", "webhook-receiver")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skyhook", description=__doc__)
    parser.add_argument("--config", help="settings file (TOML or JSON); SKYHOOK_* overrides it")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="everything in one process (SQLite + in-process bus)")
    run.add_argument("--port", type=int, default=5000, help="the API's port (default 5000)")
    run.add_argument("--demo", action="store_true", help="also start demo services and data")
    run.add_argument(
        "--fitter-port",
        type=int,
        default=None,
        help="the demo SN fitter's port (default: --port + 1)",
    )
    run.add_argument(
        "--summarizer-port",
        type=int,
        default=None,
        help="the demo summarizer's port (default: --port + 2)",
    )
    run.set_defaults(func=_cmd_run)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_upgrade = db_commands.add_parser("upgrade", help="apply migrations")
    db_upgrade.add_argument("revision", nargs="?", default="head")
    db_upgrade.set_defaults(func=_cmd_db_upgrade)

    token = commands.add_parser("token", help="API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="create a user if needed and print a token")
    create.add_argument("--username", required=True)
    create.add_argument("--admin", action="store_true")
    create.add_argument("--acl", action="append", default=[])
    create.add_argument("--group", action="append", default=[])
    create.set_defaults(func=_cmd_token_create)

    dead = commands.add_parser("dead-letters", help="inspect and re-drive dead-lettered messages")
    dead_commands = dead.add_subparsers(dest="dead_letters_command", required=True)
    dead_list = dead_commands.add_parser("list", help="print dead letters as JSON lines")
    dead_list.add_argument("--limit", type=int, default=100)
    dead_list.set_defaults(func=_cmd_dead_letters)
    dead_replay = dead_commands.add_parser("replay", help="re-publish dead letters")
    dead_replay.add_argument("--id", action="append", help="message id (repeat); default all")
    dead_replay.set_defaults(func=_cmd_dead_letters)

    stats = commands.add_parser("phot-stats", help="photometry statistics per source")
    stats_commands = stats.add_subparsers(dest="phot_stats_command", required=True)
    recompute = stats_commands.add_parser("recompute", help="recompute every source's row")
    recompute.set_defaults(func=_cmd_phot_stats_recompute)

    for name in SERVICES:
        service = commands.add_parser(name, help=f"run the {name} service alone")
        service.add_argument("--port", type=int, default=None)
        if name in MULTI_WORKER_SERVICES:
            service.add_argument(
                "--workers",
                type=_positive,
                default=None,
                help="worker processes on the one port (default SKYHOOK_WORKERS, or 1)",
            )
            # Given by the supervisor to its workers: its pid.
            service.add_argument("--worker-of", type=int, default=None, help=argparse.SUPPRESS)
        service.set_defaults(func=_cmd_service)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from shared.observability.metrics import configure_logging

    args = build_parser().parse_args(argv)
    service = args.command if args.command in SERVICES else "skyhook"
    level = os.environ.get("SKYHOOK_LOG_LEVEL", "INFO").upper()
    level = level if level in {"DEBUG", "INFO", "WARNING", "ERROR"} else "INFO"
    configure_logging(service, level, json_logs=args.command in SERVICES)
    # SIGTERM interrupts a one-shot command exactly like SIGINT (Ctrl-C); long-running
    # commands replace both with an orderly stop (_run_until_signalled).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
