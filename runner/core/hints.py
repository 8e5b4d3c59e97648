"""Short hints for failures that match a known upstream issue or a documented API limit, and
the warning before a combination known to fail.

A hint never replaces the real exception: result.json keeps its type and message, and the hint
says why it happens and what to use instead. The APIs' own hints live with them in
runner.core.apis; these are the ones of no single API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.core import apis, releases
from runner.core.apis import Format, Hint

GENERAL: list[Hint] = [
    Hint(None, ("Attempt to convert a value", "PerReplica"),
         "Keras 3 fit under MultiWorkerMirroredStrategy (keras-team/keras#20585); keras=legacy "
         "works"),
    # Measured (keras 3.15): Trainer._maybe_symbolic_build averages the first distributed batch
    # over the replicas to build the model, an AddN that takes no strings.
    Hint(None, ("AddN", "of string is not in the list of allowed values"),
         "Keras 3's fit under MirroredStrategy averages the first batch over the replicas to "
         "build the model, which fails on string inputs (a TextVectorization inside the model, "
         "model=text); keras=legacy trains it, or keep the text preprocessing in the tf.data "
         "pipeline and give the model token ids"),
    Hint(None, ("stopped sending heartbeats",),
         "another worker of the cluster died or hung: see its log (worker-<i>.log) and the "
         "'cluster:' note"),
]


def hint_for(e: BaseException, phase: str) -> str | None:
    """The first hint whose phase and words match `e`, raised in `phase`."""
    text = f"{type(e).__name__}: {e}"
    for hint in [*apis.hints(), *GENERAL]:
        if hint.matches(text, phase):
            return hint.text
    return None


# What a file's reader says when it cannot read a config another release of the library wrote.
DESERIALIZING = ("deserializ", "unexpected keyword argument", "not recognized",
                 "Unrecognized keyword")


def release_hint(result: Mapping[str, Any], e: BaseException, phase: str) -> str | None:
    """A load failure between two releases of the same Keras generation (tf=, load_tf=) that
    reads as a config one release cannot read: which wrote it and which read it, and what works.
    None otherwise (the generation hints of runner.core.apis apply)."""
    if phase != "load" or result.get("keras") != result.get("load_keras"):
        return None
    dist = "tf-keras" if result.get("keras") == "legacy" else "keras"
    wrote = (result.get("versions") or {}).get(dist)
    read = (result.get("load_versions") or {}).get(dist)
    if not wrote or not read or wrote == read or not any(w in str(e) for w in DESERIALIZING):
        return None
    if releases.version_key(read) < releases.version_key(wrote):
        return (f"written by {dist} {wrote}, read by {dist} {read}: an older release does not "
                f"read what a newer one writes (no forward compatibility). Load with {dist} >= "
                f"{wrote}, save with {dist} {read}, or go through the weights (save_api=weights "
                "load_api=weights, or checkpoint), which every release measured reads and "
                "resumes from exactly (docs/versions.md)")
    return (f"written by {dist} {wrote}, read by {dist} {read}: a newer release that does not "
            "read an older one's file is a regression of that release (keras-team/keras#19959 "
            "was one); go through the weights (save_api=weights load_api=weights), or report "
            "it upstream")


def paired_save_api(load_api: str) -> str:
    """save_api=auto: the save API the seed (and the matrices) pair with the load API."""
    return apis.LOAD_APIS[load_api].paired_save


def expected_failure(save_api: str, load_api: str, keras: str, load_keras: str,
                     weights_only: bool = False) -> str | None:
    """Why an explicitly chosen save API x load API is known to fail, with the alternative; None
    when it is not known to. Measured: docs/matrices.md."""
    if save_api == "keras_saved_model" and keras == "v3":
        return ("expected to fail in save: Keras 3's Model.save writes .keras/.h5 files only; "
                "save_api=export or saved_model write a SavedModel")
    saver, loader = apis.SAVE_APIS.get(save_api), apis.LOAD_APIS.get(load_api)
    if saver is None or loader is None:
        return None
    readable = set(loader.reads)
    if load_api == "keras" and (load_keras == "v3" or save_api != "keras_saved_model"):
        readable.discard(Format.SAVEDMODEL)  # only tf_keras reads a SavedModel it wrote itself
    writes = apis.written(save_api, keras, weights_only)
    if writes in readable:
        return None
    return (f"expected to fail in load: save_api={save_api} writes {writes.words} "
            f"(keras={keras}), which load_api={load_api} cannot read; "
            f"save_api={loader.paired_save} (or save_api=auto) writes what it reads")
