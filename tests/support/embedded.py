"""``skyhook run`` as a user starts it: a real subprocess in its own directory on free ports.

The process and everything it starts can be listed from ``/proc`` (its descendants), signalled
and waited for; its output goes to a log file shown when a test fails.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.support.polling import eventually
from tests.support.ports import free_port, free_ports_in_a_row

SKYHOOK = Path(sys.executable).with_name("skyhook")
REPO = Path(__file__).resolve().parents[2]
# The shared helpers, importable from here too (tests/test_sn_fitter_startup.py does).
__all__ = ["eventually", "free_port", "free_ports_in_a_row"]


def _die_with_test_run() -> None:
    """Runs in the child before exec: the kernel SIGKILLs it when the test process dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def skyhook_env(**settings: str) -> dict[str, str]:
    """The test's environment without its own SKYHOOK_* settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYHOOK_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(settings)
    return env


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ")".
    return int(stat.rsplit(")", 1)[1].split()[1])


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` in the process tree."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _parent_of(int(entry.name))
            if parent is not None:
                parents[int(entry.name)] = parent
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return {p for p in found if process_alive(p)}


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


@dataclass
class EmbeddedRun:
    """One ``skyhook run`` subprocess (or another long-running command: ``command``)."""

    workdir: Path
    port: int = field(default_factory=free_port)
    demo: bool = False
    extra_args: tuple[str, ...] = ()
    settings: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    runs: int = 0
    command: tuple[str, ...] = ("run",)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"skyhook-run-{self.runs}.log"

    def argv(self) -> list[str]:
        argv = [str(SKYHOOK), *self.command, "--port", str(self.port), *self.extra_args]
        return [*argv, "--demo"] if self.demo else argv

    def start(self) -> EmbeddedRun:
        self.runs += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                self.argv(),
                cwd=self.workdir,
                env=skyhook_env(**self.settings),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_test_run,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def wait_ready(self, path: str = "/readyz", url: str | None = None) -> None:
        async def ready() -> bool:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise AssertionError(f"skyhook run exited early:\n{self.log()[-4000:]}")
            try:
                async with aiohttp.ClientSession() as http:
                    async with http.get((url or self.url) + path) as response:
                        return response.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(ready, f"{url or self.url}{path} to answer 200", within=180, every=0.2)

    def signal(self, signum: signal.Signals) -> None:
        assert self.popen is not None
        self.popen.send_signal(signum)

    async def wait_exit(self, within: float = 120.0) -> int:
        async def exited() -> bool:
            assert self.popen is not None
            return self.popen.poll() is not None

        await eventually(exited, "skyhook run to exit", within=within)
        assert self.popen is not None
        return int(self.popen.returncode)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            for pid in descendants(self.popen.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.popen.kill()
            self.popen.wait()


async def create_token(run: EmbeddedRun, username: str = "tester") -> str:
    """An admin token made with ``skyhook token create`` in the run's directory."""
    process = await asyncio.create_subprocess_exec(
        str(SKYHOOK),
        "token",
        "create",
        "--username",
        username,
        "--admin",
        "--group",
        "testers",
        cwd=run.workdir,
        env=skyhook_env(**run.settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode().strip()
