"""Which releases a job or sweep runs its sides in, and the pairs refused before anything runs
(runner.core.releases, runner.core.validate); lock files and environment records
(runner.launcher.environments) without building one."""

from __future__ import annotations

import json

import pytest

from runner.core import releases
from runner.core.compose import compose
from runner.core.constraints import ConfigError
from runner.core.releases import LibrarySet
from runner.core.result import release
from runner.core.validate import check_releases, release_combinations
from runner.launcher import environments


def sets_of(overrides: list[str], sweep: list[str] | None = None) -> list[str]:
    cfg = compose(overrides)
    choice = "same" if not any(o.startswith("load_tf=") for o in overrides) else None
    return [s.name for s in check_releases(cfg, sweep, choice)]


def test_the_default_job_needs_no_other_environment() -> None:
    assert sets_of([]) == []


def test_load_tf_follows_tf_with_its_keras_version() -> None:
    cfg = compose(["tf=v2.16", "tf.keras_version=3.3.3"])
    assert (cfg.load_tf.name, cfg.load_tf.keras_version) == ("v2.16", "3.3.3")
    assert sets_of(["tf=v2.16", "tf.keras_version=3.3.3"]) == ["tf2.16-keras3.3.3"]
    assert release(cfg, "tf") == release(cfg, "load_tf") == "v2.16 keras=3.3.3"


def test_each_side_its_own_release() -> None:
    assert sets_of(["tf=v2.15", "keras=legacy", "load_tf=installed"]) == ["tf2.15"]
    assert sets_of(["load_tf=v2.19"]) == ["tf2.19"]


@pytest.mark.parametrize("overrides, words", [
    (["tf=v2.15"], "keras=v3 with tf=v2.15: TensorFlow 2.15 has no Keras 3 (its tf.keras is "
                   "Keras 2); use keras=legacy, or tf=v2.16 or newer"),
    (["load_tf=v2.15"], "load_keras=v3 with load_tf=v2.15"),
    (["tf.keras_version=3.3.3"], "tf.keras_version=3.3.3 with tf=installed"),
    (["tf=v2.16", "tf.keras_version=2.16.0"], "a Keras 3 release (e.g. 3.3.3); Keras 2 is "
                                              "tf-keras"),
    (["tf=v2.15", "keras=legacy", "tf.keras_version=3.3.3"], "Keras 3 needs TensorFlow 2.16"),
])
def test_an_impossible_pair_is_refused_with_its_reason(overrides: list[str], words: str) -> None:
    with pytest.raises(ConfigError, match=None) as raised:
        sets_of(overrides)
    assert words in str(raised.value)


def test_a_sweep_is_checked_combination_by_combination() -> None:
    cfg = compose(["keras=legacy"])
    combos = release_combinations(cfg, ["tf=installed,v2.15,v2.19"], "same")
    assert [(c["tf"], c["load_tf"]) for c in combos] == [
        ("installed", "installed"), ("v2.15", "v2.15"), ("v2.19", "v2.19")]
    assert [s.name for s in check_releases(cfg, ["tf=v2.15,v2.19", "load_tf=installed"])] == [
        "tf2.15", "tf2.19"]
    with pytest.raises(ConfigError, match="keras=v3 with tf=v2.15"):
        check_releases(compose([]), ["tf=v2.15,v2.16", "keras=legacy,v3"], "same")
    # keras swept, load_keras following it: the v3 job's load side is refused too.
    with pytest.raises(ConfigError, match="load_keras=v3 with load_tf=v2.15"):
        check_releases(compose(["tf=v2.15", "keras=legacy", "load_tf=v2.15"]),
                       ["keras=legacy,v3", "tf=installed"], "v2.15")


@pytest.mark.parametrize("text, name", [
    ("v2.16", "tf2.16"), ("2.16", "tf2.16"), ("tf2.16", "tf2.16"),
    ("tf2.16-keras3.3.3", "tf2.16-keras3.3.3")])
def test_sets_are_named_as_users_write_them(text: str, name: str) -> None:
    assert releases.parse(text).name == name


@pytest.mark.parametrize("text, words", [
    ("2.11", "not a library set: one of v2.15"), ("tf2.15-keras3.3.3", "Keras 3 needs"),
    ("latest", "not a library set")])
def test_a_set_that_is_none_says_which_are(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        releases.parse(text)


def test_tensorflow_2_15_has_no_wheel_for_python_3_12() -> None:
    why = releases.problem(LibrarySet("2.15"), "legacy", python="3.12")
    assert why and "no wheel for Python 3.12" in why
    assert releases.problem(LibrarySet("2.16"), "v3", python="3.12") is None


def test_requirements_pin_the_release_and_the_keras_of_its_choice() -> None:
    assert LibrarySet("2.15").requirements()[:3] == [
        "tensorflow==2.15.*", "tf-keras==2.15.*", "keras==2.15.*"]
    assert LibrarySet("2.16").requirements()[2] == "keras>=3"
    assert LibrarySet("2.16", "3.3.3").requirements()[2] == "keras==3.3.3"


def test_every_tf_option_has_a_lock_file_in_the_repository() -> None:
    for r in releases.RELEASES:
        lock = environments.repository_lock(LibrarySet(r)).read_text()
        pins = environments.pins(lock)
        assert pins["tensorflow"].startswith(f"{r}.") and pins["tf-keras"].startswith(f"{r}.")
        assert "--hash=sha256:" in lock  # installed with --require-hashes
    assert environments.pins(environments.repository_lock(LibrarySet("2.16", "3.3.3")).read_text())[
        "keras"] == "3.3.3"


def test_an_environment_counts_only_once_complete(tmp_path) -> None:
    found = LibrarySet("2.19")
    text, kept = environments.lock_text(found, tmp_path)
    assert kept
    target = tmp_path / environments.key(found, text)
    target.mkdir()
    assert environments.ready(target) is None and environments.built(tmp_path) == []
    (target / environments.READY).write_text(json.dumps({"set": "tf2.19", "versions": {}}))
    assert [p for p, _ in environments.built(tmp_path)] == [target]
    assert environments.remove(found, tmp_path) == [target] and not target.exists()


def test_a_changed_lock_file_makes_a_new_environment() -> None:
    found = LibrarySet("2.19")
    assert environments.key(found, "a==1") != environments.key(found, "a==2")
    assert environments.key(found, "a==1").startswith("tf2.19-py")


def test_the_summary_names_both_sides_libraries_or_only_the_loading_one():
    from runner.core.summary import release_words

    versions = {"tensorflow": "2.15.1", "tf-keras": "2.15.1", "keras": "2.15.0"}
    installed = {"tensorflow": "2.21.0", "tf-keras": "2.21.0", "keras": "3.15.1"}
    result = {"tf": "v2.15", "load_tf": None, "keras": "legacy", "load_keras": "v3",
              "versions": versions, "load_versions": installed, "load_from": None}
    assert release_words(result) == ("tensorflow 2.15.1, tf-keras 2.15.1 → tensorflow 2.21.0, "
                                     "keras 3.15.1")
    assert release_words({**result, "tf": None}) is None  # both sides installed: no words
    loaded = {**result, "tf": None, "load_tf": "v2.15", "load_from": "/tmp/m.keras",
              "load_keras": "legacy", "load_versions": versions}
    assert release_words(loaded) == "loaded with tensorflow 2.15.1, tf-keras 2.15.1"
