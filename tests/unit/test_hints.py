"""Hints: each known failure gets its own hint, in its phase only, and the real error stays."""

from __future__ import annotations

import pytest

from runner.core import apis, hints

ALL = [*apis.hints(), *hints.GENERAL]


@pytest.mark.parametrize("hint", ALL, ids=lambda h: h.words[0][:30])
def test_every_hint_is_reachable_and_keeps_to_its_phase(hint):
    """An error holding exactly the hint's words gets that hint: no earlier hint shadows it."""
    error = RuntimeError(" ... ".join(hint.words))
    phase = hint.phase or "train"
    assert hints.hint_for(error, phase) == hint.text
    if hint.phase is not None:
        other = "save" if hint.phase != "save" else "load"
        assert hints.hint_for(error, other) != hint.text


@pytest.mark.parametrize("error, phase, words", [
    # Messages as TensorFlow and Keras raise them (docs/matrices.md), and the hint's gist.
    (ValueError("Invalid filepath extension for saving. Please add either a `.keras` extension "
                "for the native Keras format (recommended) or a `.h5` extension."), "save",
     "save_api=export or save_api=saved_model"),
    (OSError("SavedModel file does not exist at: /tmp/x/saved_model/model.keras/{saved_model.pbtxt"
             "|saved_model.pb}"), "load", "a .keras file is a Keras zip archive"),
    (ValueError("File format not supported: filepath=/tmp/m. Keras 3 only supports V3 `.keras` "
                "files and legacy H5 format files (`.h5` extension)."), "load",
     "load_api=tfsm_layer or load_api=saved_model"),
    (ValueError("Attempt to convert a value (PerReplica:{...}) with an unsupported type"),
     "train", "keras-team/keras#20585"),
    (KeyError("serving_default"), "load", "no serving_default signature"),
    # model=text under Keras 3 and MirroredStrategy (measured, TF 2.21 / keras 3.15).
    (RuntimeError("Value for attr 'T' of string is not in the list of allowed values: float, "
                  "double, int32 ... ; NodeDef: {{node AddN}}; Op<name=AddN; ...> [Op:AddN]"),
     "continue", "keras=legacy trains it"),
])
def test_a_real_message_gets_its_hint(error, phase, words):
    assert words in hints.hint_for(error, phase)


def test_an_unknown_failure_gets_no_hint():
    assert hints.hint_for(ValueError("something new"), "load") is None


def _across(keras: str, wrote: str, read: str) -> dict:
    dist = "tf-keras" if keras == "legacy" else "keras"
    return {"keras": keras, "load_keras": keras, "versions": {dist: wrote},
            "load_versions": {dist: read}}


def test_a_file_an_older_release_cannot_read_says_which_wrote_and_which_read():
    # Measured: Keras 3.3.3 (tf=v2.16 tf.keras_version=3.3.3) on a .keras file of Keras 3.15.1.
    e = TypeError("<class 'keras.src.models.sequential.Sequential'> could not be deserialized "
                  "properly.")
    hint = hints.release_hint(_across("v3", "3.15.1", "3.3.3"), e, "load")
    assert hint.startswith("written by keras 3.15.1, read by keras 3.3.3: an older release")
    assert "Load with keras >= 3.15.1" in hint
    newer = hints.release_hint(_across("legacy", "2.15.1", "2.21.0"), e, "load")
    assert newer.startswith("written by tf-keras 2.15.1, read by tf-keras 2.21.0: a newer")


def test_the_release_hint_keeps_out_of_what_is_not_a_release_difference():
    e = TypeError("could not be deserialized properly")
    assert hints.release_hint(_across("v3", "3.15.1", "3.15.1"), e, "load") is None
    assert hints.release_hint(_across("v3", "3.15.1", "3.3.3"), e, "train") is None
    assert hints.release_hint(_across("v3", "3.15.1", "3.3.3"),
                              ModuleNotFoundError("No module named 'x'"), "load") is None
    crossing = {**_across("v3", "3.15.1", "3.3.3"), "load_keras": "legacy"}
    assert hints.release_hint(crossing, e, "load") is None  # the generation hints say it
