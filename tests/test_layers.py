"""The house is one-way: every import of edgeprep (top-level or inside a function) goes to the same layer or a
lower one, and there is no import circle. Read from the source, so a lazy import counts as much as a top one.

    commands -> pipelines -> rundir -> stages -> qat, targets -> bn -> backends -> report, gate, history
      -> value types, config, data, models, files -> errors, progress, utilities -> device_bench

Stages never name a format: a comparison with a format name, or a table keyed by one, belongs in backends/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORMATS = {"tflite", "openvino", "coreml"}

# Higher imports lower. Modules not listed take the rank of their nearest listed package.
RANKS = {
    "edgeprep.__main__": 10, "edgeprep.cli": 10, "edgeprep.api": 10,     # the two entry points: CLI, Python API
    "edgeprep.commands": 9,
    "edgeprep.pipelines": 8,
    "edgeprep.rundir": 7,
    "edgeprep.stages": 6,
    "edgeprep.qat": 5, "edgeprep.ptq": 5, "edgeprep.targets": 5,
    "edgeprep.bn": 4, "edgeprep.onnx": 4,      # onnx: a model loader (ONNX -> Keras), below the stages
    "edgeprep.backends": 3,
    "edgeprep.report": 2, "edgeprep.gate": 2, "edgeprep.history": 2,
    "edgeprep.artifact": 1, "edgeprep.config": 1, "edgeprep.data": 1, "edgeprep.models": 1, "edgeprep.outputs": 1,
    "edgeprep.isolation": 1, "edgeprep.devices": 1, "edgeprep.toolchain": 1,
    "edgeprep.errors": 0, "edgeprep._util": 0, "edgeprep.progress": 0, "edgeprep": 0,
    "device_bench": -1,
}


def _modules() -> dict[str, Path]:
    mods = {}
    for top in ("edgeprep", "device_bench"):
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = path
    return mods


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The modules of ours that ``name`` imports anywhere in its source (relative imports resolved)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in MODULES and "." in t:
                t = t.rpartition(".")[0]
            if t in MODULES and t != name:
                found.add(t)
    return found


def rank(name: str) -> int:
    probe = name
    while probe not in RANKS:
        if "." not in probe:
            raise AssertionError(f"{name} has no layer: add it (or its package) to RANKS in {__file__}")
        probe = probe.rpartition(".")[0]
    return RANKS[probe]


GRAPH = {m: _imports(m) for m in MODULES}


def test_every_import_goes_down_or_sideways():
    upward = sorted(f"{m} (layer {rank(m)}) imports {t} (layer {rank(t)})"
                    for m, targets in GRAPH.items() for t in targets if rank(t) > rank(m))
    assert not upward, "imports that run back up:\n" + "\n".join(upward)


def test_no_import_circle():
    state: dict[str, int] = {}
    circles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                circles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert not circles, "import circles:\n" + "\n".join(circles)


def _format_literals(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and node.value in FORMATS:
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in FORMATS]
    return []


@pytest.mark.parametrize("top", ["edgeprep"])
def test_no_format_named_outside_backends(top):
    """``fmt == "openvino"`` or ``{"tflite": ...}`` in a stage is a backend method in the wrong place."""
    found = []
    for name, path in MODULES.items():
        # toolchain.py names packages (the "openvino" package shares its format's name), not formats
        if not name.startswith(top + ".") or name.startswith(("edgeprep.backends", "edgeprep.config",
                                                               "edgeprep.toolchain")):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            hits = []
            if isinstance(node, ast.Compare):
                hits = [h for part in [node.left, *node.comparators] for h in _format_literals(part)]
            elif isinstance(node, ast.Dict):
                hits = [h for k in node.keys if k is not None for h in _format_literals(k)]
            if hits:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {', '.join(hits)}")
    assert not found, "format names outside backends/:\n" + "\n".join(found)


def test_the_tests_layers_cover_the_tree():
    """Every module has a layer, and the rule is not vacuous: the graph has imports to check."""
    for m in MODULES:
        rank(m)
    assert sum(len(t) for t in GRAPH.values()) > 150
