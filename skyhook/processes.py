"""How a service command uses its machine: the event loop it runs on, and worker processes.

``skyhook gateway --workers N`` and ``skyhook webhook-receiver --workers N`` (or
``SKYHOOK_WORKERS``) run N worker processes on one port: this process becomes a small
supervisor that starts N copies of the same command, each listening on the same host and
port with ``SO_REUSEPORT`` (the kernel spreads new connections over them). The supervisor
forwards SIGTERM and SIGINT to the workers, which stop in order as a single process does, and
waits for them. A worker that dies while nobody asked it to stops the others and the
supervisor exits with status 1: the orchestrator (compose's restart policy, Kubernetes)
restarts the whole group, instead of the supervisor hiding a crash loop.

Prometheus metrics of the workers are kept in files of a fresh directory the supervisor creates
(``PROMETHEUS_MULTIPROC_DIR``, removed when it exits), so ``/metrics`` on any worker reports the
sum over all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

log = logging.getLogger("skyhook.workers")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Set by the supervisor for its workers (prometheus_client reads it when first imported).
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# How often a worker checks that its supervisor still runs.
ORPHAN_CHECK_SECONDS = 1.0


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when ``choice`` is ``auto`` and uvloop is installed; ``None``
    (the standard library's loop) otherwise."""
    if choice != "auto":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_coroutine(main: Coroutine[Any, Any, None], event_loop: str = "auto") -> None:
    """``asyncio.run`` on the chosen event loop."""
    with asyncio.Runner(loop_factory=event_loop_factory(event_loop)) as runner:
        runner.run(main)


async def stop_when_orphaned(supervisor: int, stop: asyncio.Event) -> None:
    """A worker stops in order when its supervisor is gone (killed with SIGKILL, say), instead
    of serving on without anyone to stop it."""
    while not stop.is_set():
        if os.getppid() != supervisor:
            log.warning("the supervisor (pid %d) is gone: stopping", supervisor)
            stop.set()
            return
        await asyncio.sleep(ORPHAN_CHECK_SECONDS)


def check_port_free(host: str, port: int) -> bool:
    """Whether nothing listens on host:port yet (the workers' shared sockets would otherwise
    join another program's SO_REUSEPORT group or fail one by one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


# Exit statuses of a worker that stopped because it was asked to: orderly (0), or killed by
# the forwarded signal before it had installed its own handlers, or Ctrl-C's 130.
_STOPPED_ON_REQUEST = frozenset({0, -signal.SIGTERM, -signal.SIGINT, 130})


def supervise(argv: list[str], workers: int) -> int:
    """Run ``workers`` copies of ``argv`` until they exit; forward SIGTERM/SIGINT to them.

    Returns 0 when every worker stopped because it was asked to, 1 when one died on its own
    (the others are then stopped) or stopped with an error.
    """
    from prometheus_client import multiprocess

    metrics_dir = tempfile.mkdtemp(prefix="skyhook-metrics-")
    environment = {**os.environ, METRICS_DIR_VARIABLE: metrics_dir}
    children: dict[int, subprocess.Popen[bytes]] = {}
    state = {"stopping": False, "failed": False}

    def signal_all(signum: int) -> None:
        for child in children.values():
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signum)

    def forward(signum: int, frame: FrameType | None) -> None:
        state["stopping"] = True
        signal_all(signum)

    previous = {signum: signal.signal(signum, forward) for signum in STOP_SIGNALS}
    try:
        for _ in range(workers):
            if state["stopping"]:
                break
            child = subprocess.Popen(argv, env=environment, stdin=subprocess.DEVNULL)
            children[child.pid] = child
        log.info("%d worker processes: %s", len(children), sorted(children))
        if state["stopping"]:  # a signal came while they were being started
            signal_all(signal.SIGTERM)
        while any(child.returncode is None for child in children.values()):
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            exited = children.get(pid)
            if exited is None:
                continue
            exited.returncode = code = os.waitstatus_to_exitcode(status)
            multiprocess.mark_process_dead(pid, metrics_dir)
            if not state["stopping"]:
                log.error("worker %d exited with status %d: stopping the others", pid, code)
                state["stopping"] = state["failed"] = True
                signal_all(signal.SIGTERM)
            elif code not in _STOPPED_ON_REQUEST:
                log.error("worker %d exited with status %d while stopping", pid, code)
                state["failed"] = True
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for child in children.values():  # only after an unexpected error in this loop
            if child.returncode is None:
                child.kill()
                child.wait()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 1 if state["failed"] else 0
