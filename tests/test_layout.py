"""The package's shape: ``import parrnn`` loads only the library (no tool for experiments), and the modules of
``parrnn/`` import each other without a cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "parrnn"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The parrnn modules ``path`` imports (at any depth: lazy imports inside functions count too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    paths = list(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _package_imports(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Imports of a package's own ``__init__`` reach its submodules through the parent: drop the edge from a
    module to the package that contains it (Python runs the parent first anyway)."""
    return {m: {t for t in deps if not m.startswith(t + ".")} for m, deps in graph.items()}


def test_no_import_cycle_in_the_package():
    cycle = _cycle(_package_imports(_graph()))
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_library_modules_never_import_the_experiment_tools():
    graph = _graph()
    offenders = {m: sorted(d for d in deps if d.startswith("parrnn.experiments"))
                 for m, deps in graph.items() if not m.startswith("parrnn.experiments")}
    assert not {m: d for m, d in offenders.items() if d}


def test_import_parrnn_loads_no_tool_and_no_optional_package():
    """What ``import parrnn`` adds to what ``import torch`` loads: library modules, nothing for experiments,
    none of the optional packages (plots, CuPy, ONNX). It also prints the import time (``pytest -s``)."""
    code = ("import sys, time; import torch; before = set(sys.modules); t = time.perf_counter(); import parrnn; "
            "print(time.perf_counter() - t); print(' '.join(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    seconds, modules = out.splitlines()
    added = set(modules.split())
    print(f"import parrnn after torch: {float(seconds) * 1e3:.0f} ms, {len(added)} modules")
    assert "parrnn" in added
    assert not {m for m in added if m.startswith("parrnn.experiments")}
    optional = {"matplotlib", "cupy", "onnx", "onnxruntime", "onnxscript", "tqdm", "pandas", "numpy.testing"}
    assert not {m for m in added if m.split(".")[0] in optional}


def test_benchmarks_take_their_baselines_from_the_shared_module_not_from_the_tasks():
    graph = _graph()
    bench = {m: sorted(d for d in deps if d.startswith("parrnn.experiments.tasks"))
             for m, deps in graph.items() if m.startswith("parrnn.experiments.bench")}
    assert not {m: d for m, d in bench.items() if d}
    assert "parrnn.experiments.baselines" in graph["parrnn.experiments.bench.models"]
