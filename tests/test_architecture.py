"""The layout's boundaries hold: the library never imports the application, the runtime never imports
training, experiments or benchmarks, nothing edits ``sys.path``, and no modules import each other
in a cycle (imports inside functions count: a lazy import is still a dependency)."""

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("unisparse", "videoqa", "videoqa_training", "experiments")


def tracked_python_files():
    out = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.split()]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in tracked_python_files() if p.relative_to(ROOT).parts[0] in PACKAGES}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of ours that ``name`` imports, at any depth of its code."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # "videoqa.models.loading.load_model" -> the module that holds it
                t = t.rpartition(".")[0]
            if t:
                found.add(t)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def top(name: str) -> str:
    return name.split(".")[0]


def test_the_library_never_imports_the_application():
    bad = {(m, t) for m, ts in graph().items() if top(m) == "unisparse" for t in ts if top(t) != "unisparse"}
    assert not bad, sorted(bad)


def test_the_runtime_never_imports_training_or_experiments():
    bad = {(m, t) for m, ts in graph().items() if top(m) == "videoqa" for t in ts if top(t) not in ("videoqa", "unisparse")}
    assert not bad, sorted(bad)


def test_training_imports_no_experiments():
    bad = {(m, t) for m, ts in graph().items() if top(m) == "videoqa_training" for t in ts if top(t) == "experiments"}
    assert not bad, sorted(bad)


def test_no_file_edits_sys_path():
    files = [p for p in tracked_python_files() if p.resolve() != Path(__file__).resolve()]
    assert len(files) > 50  # the scan reads the tree
    bad = [str(p.relative_to(ROOT)) for p in files
           if any(s in p.read_text() for s in ("sys.path.insert", "sys.path.append", "sys.path[0:0]"))]
    assert bad == [], bad


def strongly_connected(g: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in list(g):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def test_no_import_cycles():
    g = graph()
    # a package's __init__ re-exporting its submodules is not a cycle of the design: drop the edge
    # from a submodule up to the package it belongs to
    g = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in g.items()}
    assert strongly_connected(g) == []


def test_the_import_walker_sees_real_edges():
    """The checks above would pass on an empty graph: make sure they read what is there."""
    g = graph()
    assert "unisparse.api" in g["unisparse"] and "videoqa.models.loading" in g["videoqa.models"]
    assert "videoqa.models.compact" in g["videoqa.models.loading"]  # a lazy, function-level import
    assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
