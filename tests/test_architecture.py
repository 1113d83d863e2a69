"""The folder tree is the architecture: read every module's imports (ast, nothing is imported) and
fail on an import circle, on a runtime module that imports a task package, on a task that imports
another task, and on the runtime importing torch."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"edge": ROOT / "edge", "edge.models": ROOT / "models", "edge.export": ROOT / "export",
                "edge.firmware_sim": ROOT / "firmware_sim"}


def module_files() -> dict[str, Path]:
    mods = {}
    for prefix, base in PACKAGE_DIRS.items():
        for f in base.rglob("*.py"):
            rel = f.relative_to(base).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            mods[".".join((prefix, *rel))] = f
    return mods


MODULES = module_files()


def imports_of(name: str, path: Path) -> set[str]:
    """Every edge module (or package) this module imports, anywhere in its body (lazy ones too)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            for a in node.names:            # `from edge.tasks import view` may name a submodule
                if f"{mod}.{a.name}" in MODULES:
                    found.add(f"{mod}.{a.name}")
    return found


GRAPH = {m: imports_of(m, p) for m, p in MODULES.items()}


def edge_deps(m: str) -> set[str]:
    return {d for d in GRAPH[m] if d in MODULES and d != m}


def task_of(m: str) -> str | None:
    parts = m.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["edge", "tasks"] else None


RUNTIME = [m for m in MODULES if m.startswith("edge.") and m.split(".")[1] in
           {"bundle", "runtime", "cost", "engine", "io", "replay", "benchmark", "quaternion", "argtypes"}] + ["edge"]


def test_the_module_list_is_read():
    assert {"edge.runtime", "edge.replay", "edge.tasks", "edge.tasks.attitude.view", "edge.engine.state_table",
            "edge.io.recordings", "edge.models.lmu", "edge.export.lower"} <= set(MODULES)


def test_no_import_circle():
    """Imports that happen at module level or lazily both count: a circle is a circle."""
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(edge_deps(m)):
            # a package's __init__ is imported by its children; that is not a circle of ours
            if m.startswith(d + "."):
                continue
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(RUNTIME))
def test_runtime_imports_no_task(module):
    tasks = sorted(d for d in edge_deps(module) if task_of(d))
    assert not tasks, f"{module} (runtime) imports task module(s) {tasks}: find them through edge.tasks"


def test_no_task_imports_another():
    wrong = [(m, d) for m in MODULES if task_of(m) for d in edge_deps(m) if task_of(d) and task_of(d) != task_of(m)]
    assert not wrong, "\n".join(f"{m} imports {d}" for m, d in wrong)


def test_daemon_and_replay_find_tasks_through_the_registry():
    for m in ("edge.replay", "edge.daemon.pipeline"):
        assert "edge.tasks" in GRAPH[m], m


def test_runtime_never_imports_torch():
    wrong = [m for m in MODULES if m == "edge" or (m.startswith("edge.") and m.split(".")[1] not in
                                                    {"models", "export", "firmware_sim"})
             if any(d == "torch" or d.startswith("torch.") for d in GRAPH[m])]
    assert not wrong, f"edge/ modules importing torch: {wrong}"


def test_the_checker_finds_what_it_looks_for(tmp_path):
    """The reader sees lazy, relative and from-imports (so the rules above can fail)."""
    f = tmp_path / "probe.py"
    f.write_text("def f():\n    from ..tasks import attitude\n    import torch\nfrom edge.tasks.forecast import view\n")
    got = imports_of("edge.engine.probe", f)
    assert {"edge.tasks", "torch", "edge.tasks.forecast", "edge.tasks.forecast.view"} <= got
    assert "edge.tasks.attitude" in got
