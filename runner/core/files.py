"""The name of every file and folder the runner writes or reads, in one place.

A job's output directory (result.json, job.log, saved_model/, ...), a sweep's (sweep.json, the
matrix), and the embedded MLflow store (mlflow.db, artifacts/).
"""

from __future__ import annotations

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
CONF_DIR = REPOSITORY / "conf"
OUTPUTS = REPOSITORY / "outputs"
# The embedded MLflow store, absolute whatever the working directory: <repository>/outputs/mlflow.
DEFAULT_STORE_DIR = OUTPUTS / "mlflow"

# ---- a job's output directory ----------------------------------------------------------------
RESULT = "result.json"
JOB_LOG = "job.log"
TRACEBACK = "traceback.txt"
WORKERS = "workers.json"  # cluster=local: the workers' pids, ports, logs
HYDRA_DIR = ".hydra"
RESOLVED = "resolved.yaml"  # in HYDRA_DIR: the config the job process ran, secrets masked
HYDRA_CONFIG = "config.yaml"  # in HYDRA_DIR, Hydra's own: written as the job starts
LOAD_FROM = "load_from"  # what a load_from=<MLflow URI> job downloaded
BEFORE_FIT = "before_fit"  # model.save_before_fit=true: what saving before training wrote
# save_api=model_checkpoint, backup_and_restore: what the callback wrote during fit (the save
# phase copies the model from it into saved_model/).
CALLBACK_DIR = "callback"

# The saved model's folder: the model as the save API wrote it, and what it must compute.
SAVED_MODEL = "saved_model"
PARTIAL = ".partial"  # the suffix of a saved_model/ folder still being written
PROBE = "probe.npz"  # the probe images and the trained model's logits on them
SAVED_WITH = "saved_with.json"  # the choices and versions that produced the model

# ---- a sweep's directory ---------------------------------------------------------------------
SWEEP = "sweep.json"
# A file, not a sweep.json field: jobs running at once under joblib would race on sweep.json.
TRACKING_LOST = ".tracking-lost"
MULTIRUN_YAML = "multirun.yaml"  # Hydra's
MATRIX_FORMATS = ("md", "csv", "png", "html")

# ---- the embedded MLflow store ---------------------------------------------------------------
STORE_DB = "mlflow.db"
STORE_ARTIFACTS = "artifacts"  # beside a sqlite store's database: its experiments' artifacts
# A store on a database server (postgresql://, ...): its experiments' artifacts, one folder per
# database, <digest of the URI>.
DATABASE_ARTIFACTS = OUTPUTS / "mlflow-artifacts"

# ---- artifacts of a run ----------------------------------------------------------------------
CURVES = "curves.png"
MODEL_SUMMARY = "model_summary.txt"  # the trained model's summary, as Keras autolog logs it
MATRIX_DIR = "matrix"


def worker_log(index: int | str, kind: str = "worker") -> str:
    """The log of a cluster's other worker, beside job.log: worker-1.log, chief-0.log."""
    return f"{kind}-{index}.log"


def matrix_file(fmt: str) -> str:
    return f"matrix.{fmt}"


def hydra_file(output_dir: Path, name: str = RESOLVED) -> Path:
    return Path(output_dir) / HYDRA_DIR / name


def sqlite_path(uri: str) -> Path | None:
    """The file of a sqlite:/// URI (absolute, or relative to the working directory); None for
    an in-memory one."""
    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        return None
    return Path(uri[len("sqlite:///"):]).resolve()


def tree_bytes(path: Path) -> int:
    """A file's size, or a folder's: every file under it."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
