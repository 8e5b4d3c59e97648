"""While a tracked job runs, what its process hands over goes into its run: each epoch's
metrics as the epoch ends, and the MLflow model as soon as it is saved."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from runner.core.result import Result
from runner.tracking import handover
from runner.tracking.record import epochs, model_name
from runner.tracking.runs import TrackedRun

# The run's tags that MLflow's Model.log also gives the logged model (who, from what code).
SOURCE_TAGS = ("mlflow.user", "mlflow.source.name", "mlflow.source.type",
               "mlflow.source.git.commit")


class JobRelay:
    """While a tracked job runs, what its process hands over (runner.tracking.handover) goes
    into its run: each epoch's metrics as the epoch ends, and the MLflow model as soon as it is
    saved, while the job goes on to load and continue. A thread polls the job's files; leaving
    the `with` takes what came last. A store that fails stops the relay: `finish` then logs what
    is missing, or the job's record waits for runner.sync."""

    POLL_S = 0.2

    def __init__(self, run: TrackedRun, directory: Path) -> None:
        self.run = run
        self.epochs_file, self.model_dir = directory / "epochs.jsonl", directory / "mlflow_model"
        self.logged: dict[str, int] = {}  # epochs logged, per phase
        self.failed = False
        self.model: dict[str, Any] | None = None  # the MLflow model's outcome, once seen
        self._read = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="runner-relay", daemon=True)

    def env(self) -> dict[str, str]:
        return {handover.EPOCHS_ENV: str(self.epochs_file),
                handover.MODEL_DIR_ENV: str(self.model_dir)}

    def __enter__(self) -> JobRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def apply(self, result: Result) -> None:
        """Into the job's result: the phases whose every epoch is in the run (`finish` logs the
        others), and where the MLflow model the job saved was logged."""
        live_phases = [phase for phase, curves in (result.get("history") or {}).items()
                       if self.logged.get(phase) == epochs({phase: curves}, phase)]
        if live_phases:
            result["metrics_logged_live"] = live_phases
        saved = result.get("mlflow_model") or {}
        if saved.get("saved") or self.model:  # logged, even if its process died before saying
            outcome = self.model or {"logged": False,
                                     "error": "the saved MLflow model was not found"}
            result["mlflow_model"] = {**{k: v for k, v in saved.items() if k != "saved"},
                                      **outcome}

    def _work(self) -> None:
        client = self.run.client
        while True:
            stopping = self._stop.wait(self.POLL_S)
            if not self.failed:
                self._relay_epochs(client)
            if self.model is None and self.model_dir.is_dir():
                self.model = self._log_model(client)
            if stopping:
                return

    def _relay_epochs(self, client: MlflowClient) -> None:
        try:
            with open(self.epochs_file, "rb") as f:
                f.seek(self._read)
                text = f.read()
        except FileNotFoundError:
            return
        whole = text[:text.rfind(b"\n") + 1]
        for line in whole.decode().split("\n")[:-1]:
            try:
                epoch = json.loads(line)
                client.log_batch(self.run.run_id, metrics=[
                    Metric(k, v, epoch["time_ms"], epoch["step"])
                    for k, v in epoch["values"].items()])
            except Exception:  # noqa: BLE001 - finish logs the phase whole, or sync does
                self.failed = True
                return
            self.logged[epoch["phase"]] = self.logged.get(epoch["phase"], 0) + 1
            self._read += len(line.encode()) + 1

    def _log_model(self, client: MlflowClient) -> dict[str, Any]:
        """What Model.log does, less saving the model (the job process did): a logged model in
        the run's experiment, linked to the run as its output, its files uploaded, READY."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model

        model_id = None
        try:
            run = client.get_run(self.run.run_id)
            logged = client.create_logged_model(
                run.info.experiment_id, name=model_name(run.data.tags),
                source_run_id=self.run.run_id,
                params=dict(run.data.params),
                tags={k: v for k, v in run.data.tags.items() if k in SOURCE_TAGS})
            model_id = logged.model_id
            mlmodel = Model.load(str(self.model_dir / "MLmodel"))
            mlmodel.artifact_path, mlmodel.run_id = logged.artifact_location, self.run.run_id
            mlmodel.model_uuid = mlmodel.model_id = model_id
            mlmodel.save(str(self.model_dir / "MLmodel"))
            client.log_outputs(self.run.run_id, models=[LoggedModelOutput(model_id, step=0)])
            client.log_model_artifacts(model_id, str(self.model_dir))
            client.finalize_logged_model(model_id, LoggedModelStatus.READY)
        except Exception as e:  # noqa: BLE001 - recorded; runner.sync rebuilds it later
            if model_id is not None:
                with contextlib.suppress(Exception):
                    client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
            return handover.not_logged(e)
        return {"logged": True, "model_uri": f"models:/{model_id}"}
