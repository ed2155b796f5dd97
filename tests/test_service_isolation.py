"""The services stand alone: the analysis services load without the ORM, the bus or any other
service, and no service imports another one."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_summarizer.options import KEY_PARAMETER
from shared.domain.llm_keys import SUMMARY_KEY_PARAMETER

ROOT = Path(__file__).resolve().parents[1]
SERVICES = (
    "gateway",
    "dispatcher",
    "webhook_receiver",
    "summary_service",
    "sn_fitter",
    "llm_summarizer",
)
# The database, the bus and what builds on them: an analysis service needs none of it.
PLATFORM_ONLY = (
    "sqlalchemy",
    "asyncpg",
    "aiosqlite",
    "aio_pika",
    "aiormq",
    "alembic",
    "shared.db",
    "shared.bus",
    "shared.domain",
    "shared.runtime.resources",
)
BLOCKER = """
import importlib.abc
import sys

BLOCKED = {blocked!r}


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"blocked import of {{name}}")
        return None


sys.meta_path.insert(0, Blocker())
"""
BUILD_SN_FITTER = """
from sn_fitter.app import FitterSettings, create_app

create_app(FitterSettings(warm_up=False))
"""
BUILD_SUMMARIZER = """
from llm_summarizer.app import SummarizerConfig, create_summarizer_app
from llm_summarizer.demo import summarizer_registration
from shared.runtime.settings import SummarizerSettings

create_summarizer_app(SummarizerConfig(SummarizerSettings()))
summarizer_registration()
"""
NOTHING_BLOCKED_LOADED = """
loaded = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
assert not loaded, loaded
print("built")
"""


def run_blocked(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter where importing any of ``blocked`` fails."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SKYHOOK_")}
    program = BLOCKER.format(blocked=blocked) + code
    return subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("service", "build"),
    [("sn_fitter", BUILD_SN_FITTER), ("llm_summarizer", BUILD_SUMMARIZER)],
)
def test_analysis_services_build_without_the_platform_or_other_services(
    service: str, build: str
) -> None:
    others = tuple(s for s in (*SERVICES, "webapp", "skyhook", "http_edge") if s != service)
    result = run_blocked(PLATFORM_ONLY + others, build + NOTHING_BLOCKED_LOADED)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip() == "built"


def test_the_blocker_blocks() -> None:
    result = run_blocked(PLATFORM_ONLY, "import gateway.app\n")
    assert result.returncode != 0
    assert "ImportError: blocked import of" in result.stderr


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def imports_of_other_services(service: str, root: Path = ROOT) -> list[str]:
    return sorted(
        f"{path.relative_to(root)} imports {module}"
        for path in (root / service).rglob("*.py")
        for module in _imported_modules(path)
        if module.split(".")[0] in SERVICES and module.split(".")[0] != service
    )


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_imports_another_service(service: str) -> None:
    assert imports_of_other_services(service) == []


def test_the_import_rule_sees_an_import_where_there_is_one(tmp_path: Path) -> None:
    (tmp_path / "dispatcher" / "inner").mkdir(parents=True)
    (tmp_path / "dispatcher" / "inner" / "a.py").write_text(
        "import dispatcher.x\n"
        "from shared.runtime import settings\n"
        "def f():\n"
        "    from summary_service.service import QUEUE\n"
    )
    assert imports_of_other_services("dispatcher", tmp_path) == [
        "dispatcher/inner/a.py imports summary_service.service"
    ]


def test_the_summarizer_reads_the_key_under_the_name_the_dispatcher_sends() -> None:
    assert KEY_PARAMETER == SUMMARY_KEY_PARAMETER
