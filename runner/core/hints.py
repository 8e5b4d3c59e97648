"""Short hints for failures that match a known upstream issue or a documented API limit, and
the warning before a combination known to fail.

A hint never replaces the real exception: result.json keeps its type and message, and the hint
says why it happens and what to use instead. The APIs' own hints live with them in
runner.core.apis; these are the ones of no single API.
"""

from __future__ import annotations

from runner.core import apis
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
