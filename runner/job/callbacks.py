"""The save APIs that are Keras callbacks during fit: `ModelCheckpoint` (save_api=model_checkpoint,
whole model or weights only) and `BackupAndRestore` (save_api=backup_and_restore), as users
resume training with them.

Each writes into the job's callback/ folder while the train side fits; the save phase then
collects what it wrote into saved_model/ (runner.job.saving), where every load API finds it
like any other artifact. What each writes (measured, keras 3.15 / tf_keras 2.21):

- ModelCheckpoint: model.keras (both);
- ModelCheckpoint(save_weights_only=True): Keras 3 model.weights.h5, tf_keras model/ (a
  TensorFlow checkpoint);
- BackupAndRestore: Keras 3 latest.weights.h5 and training_metadata.json, tf_keras a TensorFlow
  checkpoint of the model and its epoch and batch counters in backup/chief/.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tensorflow as tf

from runner.core.files import CALLBACK_DIR
from runner.job import runtime

if TYPE_CHECKING:
    from runner.core.schema import Config

MODEL_CHECKPOINT, BACKUP_AND_RESTORE = "model_checkpoint", "backup_and_restore"
CALLBACK_SAVE_APIS = (MODEL_CHECKPOINT, BACKUP_AND_RESTORE)
BACKUP = "backup"  # BackupAndRestore's backup_dir, in callback/


def folder(out: Path) -> Path:
    return out / CALLBACK_DIR


# What this process's callback writes to (for_fit): where a non-chief worker, whose files
# tf_keras writes into a temporary folder and removes, saves its own copy instead (collect).
_WRITES: dict[str, Path] = {}


def for_fit(cfg: Config, out: Path) -> list[Any]:
    """The save API's callback for the train side's fit ([] for the other save APIs)."""
    if cfg.save_api.name == MODEL_CHECKPOINT:
        return [model_checkpoint(folder(out), cfg.save_api.weights_only)]
    if cfg.save_api.name == BACKUP_AND_RESTORE:
        return [backup_and_restore(folder(out), cfg.save_api.save_freq)]
    return []


def model_checkpoint(where: Path, weights_only: bool) -> Any:
    """ModelCheckpoint saving at the end of every epoch over the same file, as its docs show:
    the file after fit is the last epoch's."""
    where.mkdir(parents=True, exist_ok=True)
    if not weights_only:
        path = where / "model.keras"
    elif runtime.keras_generation() == "keras":
        path = where / "model.weights.h5"  # Keras 3 takes nothing else for weights only
    else:
        path = where / "model" / "weights"  # tf_keras' default: a TensorFlow checkpoint
    _WRITES[MODEL_CHECKPOINT] = path
    return tf.keras.callbacks.ModelCheckpoint(str(path), save_weights_only=weights_only,
                                              save_freq="epoch", verbose=0)


def backup_and_restore(where: Path, save_freq: Any) -> Any:
    """BackupAndRestore keeping its backup after fit (delete_checkpoint=False): the backup is
    the artifact the load side reads."""
    return tf.keras.callbacks.BackupAndRestore(str(where / BACKUP), save_freq=save_freq,
                                               delete_checkpoint=False)


def leftovers(model: Any) -> list[str]:
    """What a fit with BackupAndRestore leaves on the model that breaks its next fit, each
    repaired so that the resume check can train it, and said. Measured: Keras 3.15 keeps the
    restored epoch (model._initial_epoch), so every later fit starts there and fit(epochs=1)
    trains nothing, silently; tf_keras 2.21 deletes model._training_state at the end of fit,
    so the next fit raises AttributeError."""
    notes = []
    if getattr(model, "_initial_epoch", None):
        notes.append(
            f"Keras 3 kept BackupAndRestore's restored epoch on the model "
            f"(model._initial_epoch={model._initial_epoch}): every later fit of it would "
            "start at that epoch, and fit(epochs=1) train nothing; reset to None for the "
            "resume check's steps")
        model._initial_epoch = None
    if runtime.keras_generation() == "tf_keras" and not hasattr(model, "_training_state"):
        notes.append(
            "tf_keras' BackupAndRestore deleted model._training_state at the end of fit: "
            "the model's next fit would fail with AttributeError '_training_state'; set back "
            "to None for the resume check's steps")
        model._training_state = None
    return notes


def collect(name: str, job_out: Path, staging: Path, model: Any) -> tuple[Path, list[str]]:
    """Copy what the callback wrote into `staging` (the saved_model/ being made): the path of the
    model in it, and notes. A non-chief worker of a MultiWorkerMirroredStrategy, which the
    callback made write into a temporary folder it then removed, saves its own copy."""
    written = folder(job_out)
    if not writes_files(model):
        return own_copy(name, model, staging)
    if isinstance(getattr(model, "distribute_strategy", None),
                  tf.distribute.MultiWorkerMirroredStrategy):
        # The others' copies read sync-on-read variables (the metrics'), a collective the chief
        # must join: measured, without it the next collective met another one ('Collective
        # instance 344 expected ... data_type 9 but got ... data_type 1').
        with tempfile.TemporaryDirectory(prefix="runner-join-save-") as scratch:
            own_copy(name, model, Path(scratch))
    if name == MODEL_CHECKPOINT:
        found = sorted(p for p in written.iterdir() if p.name.startswith("model"))
        if len(found) != 1:
            raise FileNotFoundError(f"ModelCheckpoint wrote {[p.name for p in found]} into "
                                    f"{written}: expected one model file or folder")
        return _copy(found[0], staging / found[0].name), [
            f"ModelCheckpoint wrote {found[0].name} at the end of the last epoch"]
    backup = written / BACKUP
    weights = backup / "latest.weights.h5"
    if weights.is_file():  # Keras 3
        metadata = backup / "training_metadata.json"
        shutil.copy2(metadata, staging / metadata.name)
        stood = json.loads(metadata.read_text())
        return _copy(weights, staging / "model.weights.h5"), [
            "BackupAndRestore (Keras 3) wrote latest.weights.h5 and training_metadata.json: the "
            f"weights file is what loads; its last backup stood at epoch {stood.get('epoch')}, "
            f"batch {stood.get('batch')}" + (
                " (in the middle of an epoch: what fit did after it is not in the artifact)"
                if stood.get("batch") else " (the end of an epoch)")]
    chief = backup / "chief"  # tf_keras writes the chief's backup there, whatever the strategy
    if (chief / "checkpoint").is_file():  # tf_keras: a checkpoint of the model and counters
        return _copy(chief, staging / "model"), [
            "BackupAndRestore (tf_keras) wrote a TensorFlow checkpoint of the model (its "
            "optimizer included) and its epoch and batch counters"]
    found = sorted(p.name for p in backup.iterdir()) if backup.is_dir() else "no folder"
    raise FileNotFoundError(f"BackupAndRestore left nothing to load in {backup}: {found}")


def writes_files(model: Any) -> bool:
    """Whether this process's callbacks keep what they write: not a non-chief worker (tf_keras'
    distributed_file_utils: it writes into workertemp_<i>/ and removes it)."""
    strategy = getattr(model, "distribute_strategy", None)
    return strategy is None or bool(strategy.extended.should_checkpoint)


def own_copy(name: str, model: Any, staging: Path) -> tuple[Path, list[str]]:
    """A non-chief worker's copy of what the chief's callback wrote, in the same format, for its
    own load side (the chief's saved_model/ is the job's one artifact)."""
    note = ("a non-chief worker: the callback wrote into a temporary folder and removed it; this "
            "worker saved its own copy in the same format for its load side")
    if name == MODEL_CHECKPOINT:
        expected = _WRITES[MODEL_CHECKPOINT]
        if expected.name == "model.keras":
            model.save(str(staging / "model.keras"))
            return staging / "model.keras", [note]
        if expected.name == "model.weights.h5":
            model.save_weights(str(staging / "model.weights.h5"))
            return staging / "model.weights.h5", [note]
        (staging / "model").mkdir()
        model.save_weights(str(staging / "model" / "weights"))
        return staging / "model", [note]
    # tf_keras' BackupAndRestore: the model beside its counters, as WorkerTrainingState writes.
    counters = {key: tf.Variable(-1, dtype=tf.int64)
                for key in ("ckpt_saved_epoch", "ckpt_saved_batch")}
    checkpoint = tf.train.Checkpoint(model=model, **counters,
                                     train_counter=model._train_counter)
    tf.train.CheckpointManager(checkpoint, str(staging / "model"), max_to_keep=1).save()
    return staging / "model", [note]


def _copy(source: Path, target: Path) -> Path:
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)
    return target
