"""The job process's side of its MLflow run, off the job's critical path.

A tracked job's process adds two things to the run the Hydra process opened: each epoch's loss
and accuracy as the epoch ends (the UI draws curves while the job runs) and the MLflow model.
MLflow costs seconds to import; a thread imports it while the job prepares its runtime, loads
its data and trains, then logs the epochs the job hands it, in order, without holding the job
up. (A sweep's fork server has MLflow imported already: the thread then has nothing to wait for.)
It starts when training does, after the job's own imports (its data's included): two threads
importing the same packages at once can deadlock on Python's import locks.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

RUN_ID_ENV = "MLFLOW_RUN_ID"  # set by the Hydra process for the chief of a tracked job only
CLOSE_TIMEOUT_S = 60.0  # the store answers in seconds, or its HTTP timeout fails it first
INTERRUPTED_CLOSE_S = 3.0  # of the 10 s an interrupted job's process has to record it


class LiveRun:
    """The run of this job process, logged to from a thread of its own. `logged`: epochs
    logged per phase; `failed`: a store that failed stops the logging (the Hydra process then
    logs the whole of each phase not logged in full)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.logged: dict[str, int] = {}
        self.failed = False
        self._tasks: queue.Queue[tuple[str, int, dict[str, float], int] | None] = queue.Queue()
        self._imported = threading.Event()
        self._thread = threading.Thread(target=self._work, name="runner-live-run", daemon=True)
        self._thread.start()

    def epoch_callback(self, phase: str) -> Any:
        """A Keras callback handing each epoch's metrics to the thread (`<phase>_loss`, ...)."""
        import tensorflow as tf

        owner = self

        class Callback(tf.keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
                values = {("accuracy" if k.endswith("accuracy") else k): float(v)
                          for k, v in (logs or {}).items()}
                owner._tasks.put((phase, epoch, values, int(time.time() * 1000)))

        return Callback()

    def tracking(self) -> Any:
        """runner.tracking, once the thread has imported it (for the MLflow model, which the
        job logs itself: it alone holds the trained model)."""
        self._imported.wait()
        from runner import tracking

        return tracking

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Wait (at most `timeout`) until every epoch handed over is logged."""
        self._tasks.put(None)
        self._thread.join(timeout)

    def complete_phases(self, history: Mapping[str, Mapping[str, list[float]]]) -> list[str]:
        """The phases whose every epoch is in the run (call after close)."""
        return [phase for phase, curves in history.items()
                if self.logged.get(phase) == max((len(v) for v in curves.values()), default=0)]

    def _work(self) -> None:
        try:
            import mlflow.models  # noqa: F401 - what log_keras_model needs, imported here
            import mlflow.tensorflow  # noqa: F401
            from mlflow.entities import Metric
            from mlflow.tracking import MlflowClient

            from runner import tracking  # noqa: F401
            client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
        except Exception:  # noqa: BLE001 - the job goes on; the Hydra process logs it all
            self.failed = True
            return
        finally:
            self._imported.set()
        while (task := self._tasks.get()) is not None:
            if self.failed:
                continue
            phase, epoch, values, now = task
            try:
                client.log_batch(self.run_id, metrics=[
                    Metric(f"{phase}_{k}", v, now, epoch) for k, v in values.items()])
            except Exception:  # noqa: BLE001 - as above
                self.failed = True
                continue
            self.logged[phase] = self.logged.get(phase, 0) + 1


_live: LiveRun | None = None


def run() -> LiveRun | None:
    """This process's live run, started on first use; None when the job is not tracked here."""
    global _live
    if _live is None and os.environ.get(RUN_ID_ENV):
        _live = LiveRun(os.environ[RUN_ID_ENV])
    return _live


def current() -> LiveRun | None:
    """The live run if one was started."""
    return _live
