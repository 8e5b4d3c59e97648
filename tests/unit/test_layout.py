"""The package's shape: laid out by the process that runs it, no import circle, nothing importing
from a layer above its own, no module much over 450 lines, and the processes' boundaries held at
import time (no TensorFlow where config time or the Hydra process runs, no MLflow in core)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers.imports import circles, graph, modules
from helpers.run import ROOT

PACKAGE = ROOT / "runner"
# Each layer imports only from its own and those below it.
LAYERS = ("runner.core", "runner.tracking", "runner.job", "runner.launcher")
COMMANDS = ("runner", "runner.__main__", "runner.sync", "runner.report", "runner.envs",
            "runner.golden")  # the top
MAX_LINES = 450


def layer(module: str) -> int:
    for rank, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return rank
    assert module in COMMANDS, f"{module} is in no layer: put it in one of {LAYERS}"
    return len(LAYERS)


def test_there_is_no_import_circle():
    assert circles(graph(PACKAGE)) == []


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [f"{module} imports {target}" for module, targets in graph(PACKAGE).items()
              for target in targets if layer(target) > layer(module)]
    assert upward == []


def test_every_module_is_in_a_layer_and_of_a_readable_size():
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules(PACKAGE).items()}
    for name in sizes:
        layer(name)
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_the_user_commands_are_at_the_top():
    assert {name for name in modules(PACKAGE) if name.count(".") == 1} == {
        *COMMANDS[1:], *LAYERS}


# Imports every module of the given packages in a fresh interpreter in which importing
# TensorFlow (or Keras, or tf_keras) fails; prints which of MLflow's modules got imported.
IMPORT_ALL = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(sorted(m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")))
"""


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory):
    """A PYTHONPATH on which `import tensorflow`, `keras` and `tf_keras` fail loudly."""
    root = tmp_path_factory.mktemp("poison")
    for name in ("tensorflow", "keras", "tf_keras"):
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(
            f"raise ImportError('{name} imported at import time')\n")
    return {"PYTHONPATH": str(root)}


def import_all(prefixes: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess:
    names = [name for name in modules(PACKAGE) if name.startswith(prefixes)
             and not name.endswith("__main__")]
    return subprocess.run([sys.executable, "-c", IMPORT_ALL, *names], cwd=ROOT,
                          env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def test_core_imports_neither_tensorflow_nor_mlflow(poisoned):
    proc = import_all(("runner.core",), poisoned)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_the_launcher_and_the_commands_import_no_tensorflow(poisoned):
    proc = import_all(("runner.launcher", "runner.sync", "runner.report", "runner.tracking"),
                      poisoned)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_poison_works(poisoned):
    """The two tests above can fail: importing the job's scenario with the poison fails."""
    proc = import_all(("runner.job.scenario",), poisoned)
    assert proc.returncode != 0 and "tensorflow imported at import time" in proc.stderr
