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
