"""The resave check (verify.resave=true): the continued model saved again with the same save
API and loaded with the same load API, against itself."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from runner.core.text import first_line
from runner.job import nested
from runner.job.loading import Loaded, load
from runner.job.saving import save

if TYPE_CHECKING:
    from runner.core.schema import Config


def resave(loaded: Loaded, save_api: str, cfg: Config, strategy: tf.distribute.Strategy | None,
           probe: np.ndarray, saved_with: dict[str, Any]) -> dict[str, Any]:
    """Save the continued model again with the same save API, load it with the same load API:
    how far its probe logits move (save -> load -> save -> load). A failure is recorded."""
    target = Path(tempfile.mkdtemp(prefix="runner-resave-"))
    try:
        subject = loaded.model if loaded.model is not None else loaded.keep_alive
        path, _ = save(save_api, subject, target, cfg.io_device, cfg.save_api.variable_policy)
        again = load(path, cfg, strategy, saved_with, probe)
        before = nested.to_numpy(loaded.predict(nested.constant(probe)))
        return {"max_abs_diff": nested.max_abs_diff(
            nested.to_numpy(again.predict(nested.constant(probe))), before)}
    except Exception as e:  # noqa: BLE001 - data: which API cannot save what it loaded
        return {"max_abs_diff": None, "error": f"{type(e).__name__}: {first_line(e)}"}
    finally:
        shutil.rmtree(target, ignore_errors=True)
