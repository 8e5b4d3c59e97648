"""The user's own model and data (`_target_`) checked at config time without running their code
(runner.core.targets; the whole configs refused or let through are test_checks.py's), named for
results, and what a load side needs to import or rebuild them; the classes a saved Keras
config needs (runner.job.scan)."""

from __future__ import annotations

import os
import sys

import pytest

from runner.core import targets
from runner.core.constraints import ConfigError
from runner.job.scan import custom_classes, written_by


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A user's package on the path, whose import would fail loudly: checks must not run it."""
    pkg = tmp_path / "mine"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('imported at config time')\n")
    (pkg / "models.py").write_text(
        "raise RuntimeError('imported at config time')\n"
        "import tensorflow as tf\n"
        "from .layers import Scale as Renamed\n"
        "def build_classifier(units=3):\n    pass\n"
        "class Net:\n    pass\n"
        "if True:\n    def conditional():\n        pass\n"
        "SIZE: int = 3\n")
    (pkg / "star.py").write_text("from os.path import *\n")
    (pkg / "lazy.py").write_text("def __getattr__(name):\n    return name\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return pkg


@pytest.mark.parametrize("target", ["mine.models.build_classifier", "mine.models.Net",
                                    "mine.models.conditional", "mine.models.Renamed",
                                    "mine.models.SIZE", "mine.star.anything",
                                    "mine.lazy.anything", "mine.models.Net.method",
                                    "tensorflow.keras.losses.Anything", "os.path.join"])
def test_a_target_that_exists_passes_without_importing_it(package, target):
    targets.check_target(target, "model._target_")
    assert "mine" not in sys.modules


@pytest.mark.parametrize("target, words", [
    ("mine.models.build_clasifier", "module mine.models ("),
    ("mine.models.build_clasifier", "did you mean mine.models.build_classifier?"),
    ("mine.models.nothing_like_it", "it defines Net, Renamed, SIZE, build_classifier, "
                                    "conditional, tf."),
    ("nope.models.build", "no module 'nope' on the path"),
    ("mine.models", "is a module: expected a function or class in it"),
    ("mine..models", "is not a dotted Python name"),
    ("", "is not a dotted Python name"),
])
def test_a_target_that_does_not_resolve_names_what_is_there(package, target, words):
    with pytest.raises(ConfigError) as e:
        targets.check_target(target, "model._target_")
    assert words in str(e.value)
    assert str(e.value).startswith(f"model._target_={target}") or "dotted" in str(e.value)
    assert "mine" not in sys.modules


def test_custom_objects_are_modules_or_names_with_dotted_paths(package):
    targets.check_custom_objects(["mine.models", "mine"])
    targets.check_custom_objects({"Net": "mine.models.Net"})
    with pytest.raises(ConfigError, match=r"model.custom_objects\[1\]=mine.layerz: no such "):
        targets.check_custom_objects(["mine.models", "mine.layerz"])
    with pytest.raises(ConfigError, match="model.custom_objects.Net=mine.models.Nett"):
        targets.check_custom_objects({"Net": "mine.models.Nett"})
    with pytest.raises(ConfigError, match="expected a list of modules"):
        targets.check_custom_objects("mine.models")
    node = {"_target_": "mine.models.build_classifier",
            "custom_objects": {"Scale": "mine.layers.Scale"}}
    assert targets.custom_object_modules(node) == ["mine.models", "mine.layers"]
    assert targets.arguments(node, "model") == {"_target_": "mine.models.build_classifier"}


def test_a_users_option_is_named_by_its_name_its_option_or_its_target():
    assert targets.option_name({"_target_": "a.b.build", "name": "mine"}, "x") == "mine"
    assert targets.option_name({"_target_": "a.b.build"}, "classifier") == "classifier"
    assert targets.option_name({"_target_": "a.b.build"}, "custom") == "build"


def test_the_users_folder_goes_first_on_the_path_of_every_process_once():
    env = {"PYTHONPATH": "/elsewhere"}
    targets.user_path(env)
    targets.user_path(env)
    assert env["PYTHONPATH"] == os.pathsep.join([os.getcwd(), "/elsewhere"])


def test_the_classes_a_keras_config_needs_beyond_keras_are_found():
    config = {"module": "keras.src.models.functional", "class_name": "Functional", "config": {
        "layers": [
            {"module": "keras.layers", "class_name": "Dense", "registered_name": None},
            {"module": "my_models.models", "class_name": "Scale",
             "registered_name": "my_models>Scale"},
            {"module": "my_models.models", "class_name": "Shift", "registered_name": "Shift"},
            {"class_name": "pkg>Old", "config": {}},  # tf_keras' legacy h5 config
            {"module": "tf_keras.src.engine.functional", "class_name": "Functional"}]}}
    assert custom_classes(config) == [("my_models>Scale", "my_models.models"),
                                      ("Shift", "my_models.models"), ("pkg>Old", None)]


def test_the_keras_generation_that_wrote_a_file_is_read_from_it(tmp_path):
    import json
    import zipfile

    for version, generation in (("3.13.0", "v3"), ("2.21.0", "legacy"), ("x", None)):
        path = tmp_path / f"{version}.keras"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("metadata.json", json.dumps({"keras_version": version}))
        assert written_by(path) == generation
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"")
    assert written_by(saved) is None
    (saved / "keras_metadata.pb").write_bytes(b"")
    assert written_by(saved) == "legacy"
