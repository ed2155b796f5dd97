"""Rules of the code's layout that a reader relies on."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "shared",
    "http_edge",
    "service_kit",
    "gateway",
    "dispatcher",
    "webhook_receiver",
    "summary_service",
    "skyhook",
    "sn_fitter",
    "llm_summarizer",
)
DIALECT_LAYER = ROOT / "shared" / "db"


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _dialect_branches(path: Path) -> list[str]:
    """Where a module looks at which database it talks to: ``….dialect.name`` or an import
    of a dialect-specific SQLAlchemy module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr == "name":
            inner = node.value
            if isinstance(inner, ast.Attribute) and inner.attr == "dialect":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .dialect.name")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "sqlalchemy.dialects"
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} import {node.module}")
    return found


def test_no_module_outside_the_dialect_layer_branches_on_the_database() -> None:
    outside = [p for p in _modules() if DIALECT_LAYER not in p.parents]
    assert outside, "no modules found"
    branches = [branch for path in outside for branch in _dialect_branches(path)]
    assert branches == []


def test_the_rule_sees_a_branch_where_there_is_one(tmp_path: Path) -> None:
    sample = ROOT / "shared" / "db" / "dialect.py"
    assert _dialect_branches(sample), "the dialect layer itself must be seen to branch"


def _imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports, at the top or inside a function; ``from a import b``
    counts as both ``a`` and ``a.b`` (``b`` may be a module)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return found


def _imports_of(package: Path, prefixes: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted(package.rglob("*.py"))
        for name in _imported_modules(path)
        if name.startswith(prefixes)
    ]


def test_handlers_do_not_import_other_handlers() -> None:
    """What several handlers share lives beside them in gateway/, never in a handler module."""
    handlers = ROOT / "gateway" / "handlers"
    assert list(handlers.glob("*.py")), "no handler modules found"
    assert _imports_of(handlers, ("gateway.handlers",)) == []


def test_the_import_rules_see_an_import_where_there_is_one() -> None:
    sample = ROOT / "gateway" / "routes.py"
    assert "gateway.handlers.accounts" in _imported_modules(sample)


def test_nothing_under_shared_speaks_http() -> None:
    """The domain and its infrastructure raise domain errors; only the edges know HTTP."""
    speaking = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((ROOT / "shared").rglob("*.py"))
        for module in _imported_modules(path)
        if module.split(".")[0] in {"aiohttp", "http_edge", "service_kit"}
    ]
    assert speaking == []


def _is_http_status(argument: ast.arg) -> bool:
    """An integer ``status`` (an analysis's status is an enum; a status received from another
    API is named for that API)."""
    annotation = ast.unparse(argument.annotation) if argument.annotation else ""
    return argument.arg == "status" and annotation.split(" | ")[0] == "int"


def test_nothing_under_shared_takes_an_http_status() -> None:
    taking = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
        for path in sorted((ROOT / "shared").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any(
            _is_http_status(argument)
            for argument in [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs]
        )
    ]
    assert taking == []
