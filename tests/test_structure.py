"""The shape of ``nbtools/``: no import circles (imports inside functions included) and no function
over 80 lines. Both read the source with ``ast``, so nothing is imported and the check takes a second.

A circle that only closes through a function-level import still couples the modules both ways (and
breaks as soon as someone moves the import to the top); a long function is a sequence of steps that
wants names. Each failure names the offenders.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nbtools"
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``from … import`` names (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every nbtools module ``module`` imports, anywhere in its body (functions and ``TYPE_CHECKING`` too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path, node)
            for alias in node.names:
                if f"{target}.{alias.name}" in known:
                    found.add(f"{target}.{alias.name}")  # ``from pkg import submodule``
                elif target in known:
                    found.add(target)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def import_knots(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of modules (Tarjan): each member reaches every other through imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def import_circles(graph: dict[str, set[str]]) -> list[str]:
    """One line per knot: a shortest circle through its first module, then every module caught in it."""
    return [" -> ".join(_circle_through(group, graph)) + f"  (knot of {len(group)}: {', '.join(group)})"
            for group in import_knots(graph)]


def _circle_through(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the group's first module back to itself, staying inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        next_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    next_frontier.append(nxt)
        frontier = next_frontier
    return group


def long_functions() -> list[str]:
    offenders = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    return offenders


def shadowed_definitions() -> list[str]:
    """A function or class defined twice in one scope: the first is dead code that reads as if it ran
    (a property's setter, ``@x.setter``, and ``@overload`` stubs are meant to repeat a name)."""
    offenders = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            seen: dict[str, int] = {}
            body = getattr(node, "body", [])
            for child in body if isinstance(body, list) else []:  # a lambda's body is one expression
                if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    continue
                meant = any(isinstance(d, ast.Attribute) or (isinstance(d, ast.Name) and d.id == "overload")
                            for d in child.decorator_list)
                if child.name in seen and not meant:
                    offenders.append(f"{path.relative_to(ROOT)}:{child.lineno} {child.name} "
                                     f"(first defined at line {seen[child.name]})")
                seen[child.name] = child.lineno
    return offenders


def test_no_import_circles():
    circles = import_circles(import_graph())
    assert not circles, "import circles (function-level imports included):\n" + "\n".join(circles)


def test_no_function_over_80_lines():
    offenders = long_functions()
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)


def test_no_definition_shadows_another():
    offenders = shadowed_definitions()
    assert not offenders, "defined twice in one scope (the first never runs):\n" + "\n".join(offenders)


# The checks themselves, on planted trees: a circle through a function-level import is found and named,
# a relative import resolves, and a function of 81 lines is reported while one of 80 is not.


def _plant(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    paths = {}
    for rel, text in files.items():
        path = tmp_path / "nbtools" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        paths[rel] = path
    return paths


def test_circle_through_function_import_is_named(tmp_path, monkeypatch):
    _plant(tmp_path, {
        "__init__.py": "",
        "a.py": "from nbtools.b import thing\n",
        "b.py": "def thing():\n    from nbtools.sub import c\n",
        "sub/__init__.py": "",
        "sub/c.py": "def late():\n    from ..a import x\n",
        "d.py": "import nbtools.a\n",
    })
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "nbtools")
    graph = import_graph()
    assert graph["nbtools.sub.c"] == {"nbtools.a"}
    assert graph["nbtools.b"] == {"nbtools.sub.c"}
    assert import_circles(graph) == ["nbtools.a -> nbtools.b -> nbtools.sub.c -> nbtools.a  "
                                     "(knot of 3: nbtools.a, nbtools.b, nbtools.sub.c)"]


@pytest.mark.parametrize("body_lines, reported", [(79, False), (80, True)])
def test_long_function_is_named(tmp_path, monkeypatch, body_lines, reported):
    body = "".join(f"    x{i} = {i}\n" for i in range(body_lines))
    _plant(tmp_path, {"__init__.py": "", "m.py": "def step():\n" + body})
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "nbtools")
    expected = [f"nbtools/m.py:1 step ({body_lines + 1} lines)"] if reported else []
    assert long_functions() == expected


def _architecture_paths(text: str) -> set[str]:
    """The `nbtools/...` names in docs/architecture.md's map (a row may name several, the later ones bare)."""
    names = set()
    for line in text.splitlines():
        if not line.startswith("| `nbtools/"):
            continue
        cell = line.split("|")[1]
        for name in (part.strip(" `") for part in cell.split(",")):
            names.add(name if name.startswith("nbtools/") else "nbtools/" + name)
    return names


def test_architecture_map_names_every_module_and_only_real_ones():
    """docs/architecture.md is the one page that names modules: it must stay true as code moves."""
    named = _architecture_paths((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    missing_on_disk = sorted(n for n in named if not (ROOT / n).exists())
    top_level = {f"nbtools/{p.name}" + ("/" if p.is_dir() else "") for p in PACKAGE.iterdir()
                 if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.name not in ("__init__.py", "__main__.py")}
    unnamed = sorted(n for n in top_level if n not in named and n.rstrip("/") not in named)
    assert not missing_on_disk, f"docs/architecture.md names what does not exist: {missing_on_disk}"
    assert not unnamed, f"docs/architecture.md does not name: {unnamed}"


def test_shadowed_definition_is_named(tmp_path, monkeypatch):
    _plant(tmp_path, {"__init__.py": "", "m.py": (
        "class Source:\n"
        "    def __init__(self, table):\n        self.table = table\n\n"
        "    def __init__(self, table, columns=None):\n        self.table = table\n\n"
        "    @property\n    def rows(self):\n        return 0\n\n"
        "    @rows.setter\n    def rows(self, value):\n        pass\n")})
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "nbtools")
    assert shadowed_definitions() == ["nbtools/m.py:5 __init__ (first defined at line 2)"]
