"""Import directions of DESIGN.md, proved in fresh interpreters (nothing cached from other tests)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE_CORE = [
    "engine", "engine.lifecycle", "engine.gates", "engine.alpha", "engine.metrics", "engine.config",
    "engine.controller", "engine.governor", "engine.commands", "engine.control", "engine.telemetry",
    "engine.launch", "engine.options", "engine.rundir",
]
UI_MODULES = {"textual", "rich", "esper_tui", "themes", "textual_plotext", "plotext"}


def loaded_after(statement: str) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in json.loads(out.stdout)}


@pytest.mark.parametrize("module", PURE_CORE)
def test_pure_core_imports_without_torch(module):
    loaded = loaded_after(f"import {module}")
    assert "torch" not in loaded
    assert "numpy" not in loaded
    assert not loaded & UI_MODULES


def test_engine_with_torch_never_loads_the_ui():
    loaded = loaded_after("import engine; engine.CNNHost(); engine.TransformerHost(); import engine.blueprints")
    assert "torch" in loaded  # the lazy names really did load the torch side
    assert not loaded & UI_MODULES


def test_dashboard_package_never_loads_torch():
    loaded = loaded_after("import esper_tui, esper_tui.cli, esper_tui.app, esper_tui.sources, esper_tui.replay")
    assert "torch" not in loaded


def test_import_linter_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a dev dependency; install with .[dev]"
    out = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("package", ["esper_tui", "esper_tui.screens", "esper_tui.widgets"])
def test_no_import_circles_in_the_dashboard_even_for_type_checking(package):
    """DESIGN.md: no import circles, type-checking imports included (import-linter's contracts leave
    those out). The screen used to import the app for a type hint while the app imported the screen."""
    import grimp

    graph = grimp.build_graph("esper_tui", "engine", "themes", exclude_type_checking_imports=False)
    assert graph.nominate_cycle_breakers(package) == set()
    for layer in ("esper_tui.screens", "esper_tui.widgets"):
        assert not graph.chain_exists(importer=layer, imported="esper_tui.app", as_packages=True)
