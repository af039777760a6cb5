"""The package's shape: no import cycle between its modules (counting imports inside functions
too), nothing test-only in it, and the job's steps reachable through hooks."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "src" / "sweep"


def module_names() -> dict[str, Path]:
    """Dotted names below `sweep` (`job`, `results.load`, ...) -> their files."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    names.pop("", None)
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the sweep modules it imports, anywhere in its code (a package's own
    `__init__` counts as the package)."""
    modules = module_names()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from . import x / from .x import y
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    base = ".".join(p for p in (base, node.module or "") if p)
                elif node.module and (node.module == "sweep" or node.module.startswith("sweep.")):
                    base = node.module.removeprefix("sweep").lstrip(".")
                else:
                    continue
                for alias in node.names:
                    full = ".".join(p for p in (base, alias.name) if p)
                    found.add(full if full in modules else base)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("sweep."):
                        found.add(alias.name.removeprefix("sweep."))
        graph[name] = {m for m in found if m in modules} - {name}
    # A module importing from its own package's __init__ is not a cycle with it.
    for name in graph:
        graph[name] -= {p for p in graph[name] if name.startswith(p + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "job" in graph["run"] and "isolate" in graph["job"]  # the graph is really read
    assert cycles(graph) == []


def test_the_cycle_check_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_nothing_test_only_in_the_package():
    assert not (PACKAGE / "faults.py").exists()
    for path in PACKAGE.rglob("*.py"):
        assert "SWEEP_FAULT" not in path.read_text(), path


def test_a_hooks_module_named_in_the_environment_sees_every_step(tmp_path):
    (tmp_path / "steps_hook.py").write_text(
        "import os\n"
        "from sweep import hooks\n"
        "def seen(step, record, job):\n"
        "    with open(os.environ['STEPS_OUT'], 'a') as f:\n"
        "        f.write(f'{step} {job} {record.status}\\n')\n"
        "hooks.register(seen)\n"
    )
    out = tmp_path / "steps.txt"
    code = (
        "from hydra import compose, initialize_config_dir\n"
        "from sweep.job import run_job\n"
        f"with initialize_config_dir(config_dir={str(REPO / 'conf')!r}, version_base='1.3'):\n"
        "    cfg = compose(config_name='config', overrides=['experiment=quick', 'tokens=2',\n"
        "        'runs.benchmark=1', 'compile_cache_dir=null'])\n"
        f"rec = run_job(cfg, job_dir={str(tmp_path / 'job')!r})\n"
        "assert rec.status == 'ok', rec.error\n"
    )
    env = {"SWEEP_HOOKS": "steps_hook", "STEPS_OUT": str(out), "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**_base_env(), **env, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [line.split()[0] for line in out.read_text().splitlines()]
    assert steps == ["start", "load", "warmup", "benchmark", "final"]


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SWEEP_HOOKS"))}


def test_an_unimportable_hooks_module_is_an_error_naming_the_variable():
    from sweep import hooks

    with pytest.raises(hooks.HookError, match="SWEEP_HOOKS='no_such_module_xyz'"):
        hooks.import_env_hooks({"SWEEP_HOOKS": "no_such_module_xyz"})
