"""The dependency rules of the code base, read from the source with `ast` (no import runs):

- no import cycle between product modules, imports inside functions included (a cycle that
  only an import inside a function makes possible is still a cycle: neither side can be read,
  tested or split without the other);
- each app imports only the apps below it — dependencies run one way;
- `pantheon` is shared plumbing: it imports no app, except in its composition root (the URL
  conf, settings, Celery app and server entry points), which wires the apps together;
- a services module never imports a tasks module (tasks call services; services enqueue by task
  name);
- the product never imports test support (the top-level `testing` package, any `tests`).

Product modules are every `.py` under the apps and `pantheon`, outside `tests/` and
`migrations/`. The top-level `testing` package may import anything.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("accounts", "llm", "pantheon", "rooms", "sessions", "usage")
TEST_SUPPORT = ("testing", "tests")

# The apps each package may import, besides itself. `pantheon` holds the shared plumbing every
# app may use. rooms uses accounts (owners) and llm (catalog models of agents and managers).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "accounts": frozenset({"pantheon"}),
    "llm": frozenset({"pantheon"}),
    "usage": frozenset({"accounts", "pantheon"}),
    "rooms": frozenset({"accounts", "llm", "pantheon"}),
    "sessions": frozenset({"accounts", "llm", "pantheon", "rooms", "usage"}),
    "pantheon": frozenset(),
}
# The modules of `pantheon` that compose the apps, and so may import any of them.
COMPOSITION_ROOT = frozenset(
    {"pantheon.urls", "pantheon.settings", "pantheon.celery", "pantheon.asgi", "pantheon.wsgi"}
)


@dataclass(frozen=True)
class Source:
    """One module's text, and whether it is a package's `__init__` (relative imports differ)."""

    text: str
    path: str
    is_package: bool = False


@dataclass(frozen=True)
class Import:
    """`importer` imports `imported` at `path:line`. `imported` is a product module when the
    name resolves to one (`from rooms import selectors` → `rooms.selectors`), else the name as
    written."""

    importer: str
    imported: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.imported}"


def product_sources(root: Path = BASE_DIR) -> dict[str, Source]:
    """Every product module by dotted name."""
    sources: dict[str, Source] = {}
    for package in PRODUCT_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            if {"tests", "migrations"} & set(relative.parts):
                continue
            parts = relative.with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            sources[name] = Source(path.read_text(), str(relative), is_package)
    return sources


def _written_names(module: str, source: Source, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The dotted names an import statement reaches, relative imports made absolute."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = module.split(".") if source.is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([node.module] if node.module else [])])
    for alias in node.names:
        yield base if alias.name == "*" else f"{base}.{alias.name}"


def _resolve(name: str, modules: Mapping[str, Source]) -> str:
    """The longest prefix of `name` that is a product module; `name` itself when none is."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return name


def imports_of(sources: Mapping[str, Source]) -> list[Import]:
    """Every import statement of `sources`, anywhere in the module (functions, methods,
    `if TYPE_CHECKING:` blocks, `try:` fallbacks) — one entry per module reached."""
    found: list[Import] = []
    for module, source in sources.items():
        for node in ast.walk(ast.parse(source.text, filename=source.path)):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            reached = {_resolve(name, sources) for name in _written_names(module, source, node)}
            found.extend(
                Import(module, target, source.path, node.lineno)
                for target in sorted(reached)
                if target != module
            )
    return found


def cycles(sources: Mapping[str, Source], imports: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    graph: dict[str, set[str]] = {module: set() for module in sources}
    for edge in imports:
        if edge.imported in graph:
            graph[edge.importer].add(edge.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(components)


def _app(module: str) -> str:
    return module.split(".")[0]


def _is_services(module: str) -> bool:
    return "services" in module.split(".")[1:]


def _is_tasks(module: str) -> bool:
    return "tasks" in module.split(".")[1:]


def _is_test_support(name: str) -> bool:
    parts = name.split(".")
    return parts[0] in TEST_SUPPORT or "tests" in parts[1:]


SOURCES = product_sources()
IMPORTS = imports_of(SOURCES)


def _report(title: str, lines: list[str]) -> str:
    return "\n".join([title, *(f"  {line}" for line in lines)])


# --- the rules ---------------------------------------------------------------------------------


def test_no_import_cycle_between_product_modules() -> None:
    found = cycles(SOURCES, IMPORTS)
    lines = []
    for component in found:
        members = set(component)
        lines.append(" <-> ".join(component))
        lines.extend(
            f"  {edge}" for edge in IMPORTS if edge.importer in members and edge.imported in members
        )
    assert not found, _report("Import cycles (imports inside functions count):", lines)


def test_each_app_imports_only_the_apps_below_it() -> None:
    forbidden = [
        str(edge)
        for edge in IMPORTS
        if _app(edge.imported) in MAY_IMPORT
        and _app(edge.imported) != _app(edge.importer)
        and _app(edge.imported) not in MAY_IMPORT[_app(edge.importer)]
        and edge.importer not in COMPOSITION_ROOT
    ]
    assert not forbidden, _report("Imports against the direction of dependencies:", forbidden)


def test_services_never_import_tasks() -> None:
    forbidden = [
        str(edge) for edge in IMPORTS if _is_services(edge.importer) and _is_tasks(edge.imported)
    ]
    assert not forbidden, _report(
        "Services importing tasks (enqueue by task name instead):", forbidden
    )


def test_the_product_never_imports_test_support() -> None:
    forbidden = [str(edge) for edge in IMPORTS if _is_test_support(edge.imported)]
    assert not forbidden, _report("Product modules importing test support:", forbidden)


# --- the reader itself: each rule above can fail -----------------------------------------------


def test_the_reader_finds_every_kind_of_import() -> None:
    sources = {
        "shop": Source("from shop import orders\n", "shop/__init__.py", is_package=True),
        "shop.orders": Source(
            "from .pricing import price\nimport shop.stock as stock\n", "shop/orders.py"
        ),
        "shop.pricing": Source(
            "def price():\n    from shop.orders import total\n    return total\n",
            "shop/pricing.py",
        ),
        "shop.stock": Source("from . import pricing\nfrom django.db import models\n", "x"),
    }
    reached = {(edge.importer, edge.imported) for edge in imports_of(sources)}
    assert reached == {
        ("shop", "shop.orders"),
        ("shop.orders", "shop.pricing"),  # relative, `from .module import name`
        ("shop.orders", "shop.stock"),  # `import a.b as c`
        ("shop.pricing", "shop.orders"),  # inside a function
        ("shop.stock", "shop.pricing"),  # relative, `from . import module`
        ("shop.stock", "django.db.models"),  # not a product module: kept as written
    }
    # orders → pricing → orders (through the function), and orders → stock → pricing → orders.
    assert cycles(sources, imports_of(sources)) == [["shop.orders", "shop.pricing", "shop.stock"]]


def test_the_rules_see_the_real_code_base() -> None:
    # A reader that found nothing would pass every rule: check it sees known imports.
    reached = {(edge.importer, edge.imported) for edge in IMPORTS}
    assert ("pantheon.urls", "usage.selectors") in reached
    assert ("sessions.api.views.turns", "pantheon.api.views") in reached
    assert ("rooms.selectors", "accounts.models") in reached
    assert {"accounts", "llm", "rooms", "sessions", "usage"} <= {_app(m) for m in SOURCES}
    assert not any(_is_test_support(module) for module in SOURCES)
