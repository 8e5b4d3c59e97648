"""A job's saved_model/ folder: the model as the save API wrote it, with what verifies it
wherever it is loaded (probe.npz: the probe images, the trained model's logits on them and the
resume check's reference; saved_with.json: the choices and versions that produced it).

Written under a temporary name and renamed into place once whole; read back with every problem
naming the file it is in, before any load API sees it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from runner.core import result as results
from runner.core import targets
from runner.core.files import LOAD_FROM, PARTIAL, PROBE, SAVED_MODEL, SAVED_WITH, tree_bytes
from runner.core.result import Result
from runner.core.resume import RECIPE
from runner.core.trust import TRUST_KEY, refusal
from runner.job import models, nested, verify
from runner.job.scan import is_hdf5, native_format, scan, written_by

if TYPE_CHECKING:
    from runner.core.schema import Config


class ArtifactError(ValueError):
    """A saved model (or what verifies it) that is missing, incomplete or not what it claims."""


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A folder that becomes out/saved_model/ only once everything is in it: written under a
    temporary name and renamed into place, so a save that fails or is interrupted never leaves
    a saved_model/ that looks valid. On failure the temporary folder is removed."""
    staging = out / f".{SAVED_MODEL}.{os.getpid()}{PARTIAL}"  # mkdir: the usual permissions
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        os.replace(staging, out / SAVED_MODEL)  # fails over a saved_model/ that is not empty
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@dataclass
class Reference:
    """What the original model gave after `steps` more optimizer steps on these batches."""

    images: Any  # an array, or a tree of them (runner.job.nested)
    labels: Any
    global_batch: int
    seed: int
    logits: Any  # the probe's logits after the steps

    @property
    def steps(self) -> int:
        return -(-nested.examples(self.labels) // self.global_batch)

    def recipe(self) -> str:
        return RECIPE.format(n=nested.examples(self.labels), steps=self.steps,
                             batch=self.global_batch)


@dataclass
class Stored:
    model: Path  # model.keras or the SavedModel directory `model`
    probe: np.ndarray | None  # None: a model saved outside the runner, until runner.job.native
    logits: np.ndarray | None
    saved_with: dict[str, Any]
    reference: Reference | None = None  # the resume check's, if it was stored
    notes: list[str] = field(default_factory=list)
    native: bool = False  # saved outside the runner: verified against its own format's load


def write_stored(folder: Path, probe: Any, logits: Any, saved_with: Mapping[str, Any]) -> None:
    np.savez_compressed(folder / PROBE, **nested.pack("images", probe),
                        **nested.pack("logits", logits))
    (folder / SAVED_WITH).write_text(json.dumps(saved_with, indent=2) + "\n")


def add_reference(folder: Path, ref: Reference) -> None:
    """The resume check's reference, added to probe.npz once the train side has it (after the
    save: it continues the original). Rewritten under a temporary name and renamed into place,
    so probe.npz is always whole: without the reference, or with it."""
    with np.load(folder / PROBE) as probe:
        arrays = dict(probe)
    tmp = folder / f".{PROBE}.{os.getpid()}.tmp.npz"
    np.savez_compressed(tmp, **arrays, **nested.pack("resume_images", ref.images),
                        **nested.pack("resume_labels", ref.labels),
                        **nested.pack("resumed_logits", ref.logits),
                        resume_global_batch=np.int64(ref.global_batch),
                        resume_seed=np.int64(ref.seed))
    os.replace(tmp, folder / PROBE)


def read_stored(location: Path, trust: bool = False) -> Stored:
    """The model at `location`: a job's output directory, its saved_model/ folder or the model
    file/directory inside that folder. Every problem names the file it is in. What in it could
    run code on this machine (runner.job.scan) is refused, unless `trust`."""
    if not location.exists():
        raise FileNotFoundError(f"load_from: {location} does not exist")
    if any(p.name.endswith(PARTIAL) for p in (location, *location.parents)):
        raise ArtifactError(f"{location} is an unfinished save (a *{PARTIAL} folder): the job "
                            "that wrote it failed or was interrupted while saving")
    candidates = [location / SAVED_MODEL, location, location.parent]
    folder = next((c for c in candidates if (c / PROBE).is_file()), None)
    if folder is None and native_format(location):
        return _checked(Stored(location, None, None, native_saved_with(location), native=True),
                        trust)
    if folder is None:
        raise FileNotFoundError(
            f"load_from: {location} is neither a runner job's model (no {PROBE} in or beside "
            f"it: a job's output directory, its {SAVED_MODEL}/ folder, or the model inside "
            "that folder) nor a model saved outside the runner (a .keras or .h5 file, or a "
            "SavedModel folder with its saved_model.pb)")
    try:
        saved_with = json.loads((folder / SAVED_WITH).read_text())
        model = location if folder == location.parent else folder / saved_with["model_file"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{folder / SAVED_WITH} is unreadable: "
                            f"{type(e).__name__}: {e}") from e
    try:
        with np.load(folder / PROBE) as npz:
            probe = dict(npz)
        images, logits = nested.unpack(probe, "images"), nested.unpack(probe, "logits")
        if images is None or logits is None:
            raise KeyError("images" if images is None else "logits")
        stored = Stored(model, images, logits, saved_with)
        if nested.contains(probe, "resumed_logits"):
            stored.reference = Reference(
                nested.unpack(probe, "resume_images"), nested.unpack(probe, "resume_labels"),
                int(probe["resume_global_batch"]), int(probe["resume_seed"]),
                nested.unpack(probe, "resumed_logits"))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise ArtifactError(f"{folder / PROBE} is unreadable: "
                            f"{type(e).__name__}: {e}") from e
    return _checked(stored, trust)


def _checked(stored: Stored, trust: bool) -> Stored:
    """The model's files complete, and nothing in them that could run code, unless `trust`."""
    check_model(stored.model)
    findings = scan(stored.model)
    if findings and not trust:
        raise refusal(findings, stored.model)
    if findings:
        stored.notes.append(f"{TRUST_KEY}=true: loaded although it carries what could run code: "
                            + "; ".join(map(str, findings)))
    return stored


def native_saved_with(location: Path) -> dict[str, Any]:
    """What a model saved outside the runner says about itself: its file and format, and the
    Keras generation that wrote it where its files tell. No train-side choices: none were made
    by the runner."""
    return {"reference": "native", "model": location.name, "model_file": location.name,
            "format": native_format(location), "keras": written_by(location),
            "strategy": None, "save_api": None}


def check_model(path: Path) -> None:
    """The model's files are complete, before any load API reads them: load APIs report a
    truncated or foreign file misleadingly (Keras 3: 'File not found' for a file that exists)."""
    if not path.exists():
        raise ArtifactError(f"{path} does not exist")
    if path.is_dir():
        if (path / "checkpoint").is_file():  # tf.train.Checkpoint, tf_keras save_weights
            prefix = tf.train.latest_checkpoint(str(path))
            if prefix is None or not Path(prefix + ".index").is_file():
                raise ArtifactError(f"{path} is an incomplete checkpoint: its 'checkpoint' file "
                                    "names no checkpoint whose .index exists")
            return
        if not any((path / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt")):
            raise ArtifactError(f"{path} is not a SavedModel directory (no saved_model.pb) "
                                "nor a checkpoint (no 'checkpoint' file)")
        return
    if path.suffix == ".h5":
        if not is_hdf5(path):
            raise ArtifactError(f"{path} is not an HDF5 file: truncated, or a file of "
                                "another format")
        return
    if path.suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise ArtifactError(f"{path} is not a .keras archive (not a zip file): truncated, "
                                "or a file of another format")
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (OSError, zipfile.BadZipFile, EOFError) as e:
            raise ArtifactError(f"{path} is a damaged .keras archive: {e}") from e
        if bad is not None:
            raise ArtifactError(f"{path} is a damaged .keras archive: {bad} fails its CRC check")


def saved_with(cfg: Config, path: Path, result: Result, model: tf.keras.Model,
               compiled: bool = False,
               input_shape: list[int | None] | None = None,
               input_dtype: str | None = None) -> dict[str, Any]:
    """What produced the model: a later `load_from` job reports these as its train side."""
    return {
        **{group: cfg[group].name for group in results.TRAIN_SIDE},
        "train_variant": result.get("train_variant"),
        "tf": result.get("tf"),
        # What load_api=checkpoint/weights build afresh to restore into, and compile it with.
        "model_options": models.model_options(cfg.model),
        "compile": models.COMPILED_BY_MODEL if compiled else models.compile_spec(cfg.train),
        "precision": cfg.train.precision,  # the dtype policy a rebuild uses
        "low_precision_layers": len(verify.low_precision_layers(model)) or None,
        "input_shape": input_shape,
        "input_dtype": input_dtype,  # what hub/tfsm_layer's new Input takes (text: string)
        "save_api_options": {"in_scope": cfg.save_api.in_scope,
                             "variable_policy": cfg.save_api.variable_policy},
        "data": cfg.data.name,
        "keras_module": result["keras_module"],
        "replicas": result["replicas"]["train"],
        "model_file": path.name,
        "seed": cfg.seed,
        "optimizer": result["optimizer"]["saved"],
        "random_layers": result["random_layers"],
        "batchnorm_layers": verify.batchnorm_layers(model),
        "pinned_devices": result["pinned_devices"],
        "versions": result["versions"],
        "output_dir": result["output_dir"],
    }


def stored_model(cfg: Config, out: Path, result: Result) -> Stored:
    """This job's saved_model/, or the one `load_from` names (fetched from MLflow if a URI)."""
    if not cfg.load_from:  # the job's own model is checked too: it takes milliseconds
        return read_stored(out / SAVED_MODEL, cfg.load.trust)
    location = Path(cfg.load_from).expanduser()
    if _is_uri(cfg.load_from):
        from runner.tracking.artifacts import download  # MLflow: only for a load_from URI

        location = download(cfg.load_from, out / LOAD_FROM, cfg.mlflow)
    stored = read_stored(location.resolve(), cfg.load.trust)
    result.update({group: stored.saved_with.get(group)
                   for group in (*results.TRAIN_SIDE, "train_variant", "tf")})
    result["keras_module"] = stored.saved_with.get("keras_module")
    result["replicas"]["train"] = stored.saved_with.get("replicas")
    result["saved_with"] = stored.saved_with
    result["artifact"] = str(stored.model)
    result["artifact_bytes"] = tree_bytes(stored.model)
    if stored.native:
        result["reference"] = "native"
        # What load_api=checkpoint/weights rebuild, and compile it with: the job's own config.
        if targets.is_target(cfg.model):
            stored.saved_with["model_options"] = models.model_options(cfg.model)
        stored.saved_with["compile"] = models.compile_spec(cfg.train)
        result["notes"].append(
            f"load_from: a model saved outside the runner ({stored.saved_with['format']}, "
            f"written by keras={stored.saved_with['keras'] or 'unknown'}): verified against "
            "itself loaded with its format's own API outside any strategy, on "
            f"data={cfg.data.name}")
        return stored
    result["notes"].append(
        f"load_from: strategy, save_api, model and keras are the loaded model's (its "
        f"{SAVED_WITH}: trained on data={stored.saved_with.get('data')}); "
        f"this job verified and continued on data={cfg.data.name}")
    return stored


def _is_uri(location: str) -> bool:
    """runs:/..., models:/..., s3://... : anything MLflow can download; plain paths are not."""
    return re.match(r"^[A-Za-z][\w+.-]*:/", location) is not None

