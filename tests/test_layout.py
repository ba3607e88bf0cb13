"""The package's architecture, checked: imports flow one way, and the light parts stay light.

The import graph is read from the source (every ``import`` statement, function-level ones included), so a cycle
hidden inside a function body fails here rather than at some user's first call.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "robopoint_hf"
GENERATED = ("default_model", "metrics")  # copies of package modules (Hub folder, metric Space), checked elsewhere
LIGHT_MODULES = (
    "robopoint_hf",
    "robopoint_hf.model.points",
    "robopoint_hf.model.templates",
    "robopoint_hf.inference.deproject",
    "robopoint_hf.inference.placement",
    "robopoint_hf.inference.serving",
    "robopoint_hf.inference.completions",
    "robopoint_hf.inference.server",
    "robopoint_hf.evaluation.where2place",
    "robopoint_hf.evaluation.protocols",
    "robopoint_hf.evaluation.answer_formats",
    "robopoint_hf.checkpoints",
)
VERBS = ("predict", "convert", "export", "train", "merge-lora", "eval", "synth", "demo", "serve")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        if any(part in GENERATED for part in relative.parts):
            continue
        parts = relative.parts[:-1] if path.name == "__init__.py" else relative.parts
        modules[".".join(parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its body."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target not in (name, "robopoint_hf"):
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    # cli/predict.py imports the visualizer inside a function only: the walk must see it.
    assert "robopoint_hf.inference.visualize" in graph["robopoint_hf.cli.predict"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_model_code_imports_only_its_siblings():
    """``model/`` is copied next to the weights and must run without the rest of the package."""
    outside = {
        (name, target)
        for name, targets in import_graph().items()
        if name.startswith("robopoint_hf.model.")
        for target in targets
        if not target.startswith("robopoint_hf.model.")
    }
    assert outside == set()


def test_nothing_imports_the_command_line_and_only_it_imports_the_demo():
    offenders = {
        (name, target)
        for name, targets in import_graph().items()
        for target in targets
        if (target.startswith("robopoint_hf.cli") and not name.startswith("robopoint_hf.cli"))
        or (target.startswith("robopoint_hf.demo") and not name.startswith(("robopoint_hf.demo", "robopoint_hf.cli")))
    }
    assert offenders == set()


def _heavy_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in ('torch', 'transformers') if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_light_modules_import_neither_torch_nor_transformers():
    assert _heavy_after("; ".join(f"import {module}" for module in LIGHT_MODULES)) == []


@pytest.mark.slow
def test_registration_still_happens_for_users_who_import_the_package():
    code = (
        "import robopoint_hf\n"
        "from transformers import AutoConfig, AutoModel, pipelines\n"
        "config = AutoConfig.for_model('robopoint')\n"
        "assert type(config).__module__ == 'robopoint_hf.model.configuration_robopoint', type(config)\n"
        "assert AutoModel._model_mapping[type(config)].__name__ == 'RoboPointForConditionalGeneration'\n"
        "assert 'robopoint' in pipelines.PIPELINE_REGISTRY.get_supported_tasks()\n"
    )
    assert _heavy_after(code) == ["torch", "transformers"]


@pytest.mark.slow
@pytest.mark.parametrize("verb", (None, *VERBS))
def test_help_imports_neither_torch_nor_transformers(verb):
    argv = ["--help"] if verb is None else [verb, "--help"]
    code = f"from robopoint_hf.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert _heavy_after(code) == []
