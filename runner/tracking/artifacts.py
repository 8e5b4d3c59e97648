"""A `load_from` model fetched from MLflow: any artifact URI MLflow can download."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import mlflow.artifacts

from runner.core.files import SAVED_MODEL, sqlite_path
from runner.tracking.store import configure

if TYPE_CHECKING:
    from runner.core.schema import Mlflow


def download(uri: str, destination: Path, mcfg: Mlflow) -> Path:
    """A `load_from` artifact URI fetched into `destination`; runs:/<id> alone means that run's
    saved_model/ folder."""
    if uri.startswith("runs:/") and "/" not in uri[len("runs:/"):].strip("/"):
        uri = uri.rstrip("/") + "/" + SAVED_MODEL
    tracking_uri, _ = configure(mcfg, create=False)
    database = sqlite_path(tracking_uri)
    if database is not None and not database.is_file():  # MLflow would make an empty store
        raise FileNotFoundError(
            f"load_from={uri}: the run would be looked up in the MLflow store {database}, which "
            "does not exist: give the store that holds it (mlflow.tracking_uri=... or "
            "mlflow.store_dir=DIR), or load_from=PATH of the job's output directory")
    destination.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(
        artifact_uri=uri, dst_path=str(destination), tracking_uri=tracking_uri))
