"""The MLflow store: which one the config names, reaching it, and making an embedded sqlite
store whole before anyone opens it.

The URI is passed explicitly everywhere, never through mlflow.set_tracking_uri, which also sets
MLFLOW_TRACKING_URI in os.environ, which the next job of a sweep would read as its config.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from runner.core import redact
from runner.core.files import (
    DATABASE_ARTIFACTS,
    DEFAULT_STORE_DIR,
    STORE_ARTIFACTS,
    STORE_DB,
    sqlite_path,
)
from runner.core.text import first_line

if TYPE_CHECKING:
    from runner.core.schema import Mlflow

# MLflow's INFO lines (a fresh store's tables created, system metrics started and stopped) are
# its business, not the job's: the console keeps the job's own output and MLflow's warnings.
for _name in ("mlflow.store.db.utils", "mlflow.system_metrics", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.WARNING)

# What the experiment is for, in MLflow's own tag. (The 3.17 UI does not open it by this tag: it
# opens in its GenAI mode unless the link says WORKFLOW, measured in a headless browser.)
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


class TrackingUnavailableError(RuntimeError):
    """The tracking store or server could not be reached."""


def configure(mcfg: Mlflow, brief: bool = False, create: bool = True) -> tuple[str, str | None]:
    """The configured store: (tracking URI, artifact location for a new experiment, or None
    where a server chooses). create=False: an embedded store's folder is not made (a store is
    only read).

    Also shortens MLflow's HTTP retries (defaults: 7 retries, 120 s timeout) so that an
    unreachable server is reported in seconds; the job process inherits the same settings.
    """
    # brief: one try (a sweep's job looking whether a store that went away is back).
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0" if brief else str(mcfg.http_max_retries)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(mcfg.http_timeout_s)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    # MLflow's own "View run at" lines: the runner prints its own, which open the UI in its
    # "Model training" mode (runs.TrackedRun.page) and never carry a password from the URI.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    if mcfg.tracking_uri:
        uri = mcfg.tracking_uri
        return uri, database_artifacts(uri)
    store = Path(mcfg.store_dir or DEFAULT_STORE_DIR).resolve()
    if create:
        store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store / STORE_DB}"
    return uri, database_artifacts(uri)


DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def database_artifacts(uri: str) -> str | None:
    """Where a new experiment in a database store (no server) keeps its artifacts: beside a
    sqlite file (its folder's artifacts/), or, for a database server, a folder of the runner's
    own for that database (outputs/mlflow-artifacts/<digest of the URI>). MLflow's default is
    ./mlruns of whatever folder the process runs in: two sweeps started from two folders split
    one store's artifacts between them. None for a tracking server, which chooses."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in DATABASE_SCHEMES:
        return None
    if scheme == "sqlite":
        database = sqlite_path(uri)
        if database is not None:
            return (database.parent / STORE_ARTIFACTS).as_uri()
    digest = hashlib.sha256(redact.text(uri).encode()).hexdigest()[:12]
    return (DATABASE_ARTIFACTS / digest).as_uri()


def store_name(mcfg: Mlflow) -> str:
    """The configured store as a message names it, before configure() resolves it."""
    return mcfg.tracking_uri or str(mcfg.store_dir or DEFAULT_STORE_DIR)


def experiment(client: MlflowClient, name: str, artifacts: str | None) -> str:
    """The runner's experiment in the store (created as a model-training one if missing)."""
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=artifacts,
                                             tags=dict([EXPERIMENT_KIND]))
        except MlflowException as e:
            # Created meanwhile: by another runner on the same server, or by this request
            # itself when its reply timed out and the retry found the experiment there.
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = client.get_experiment_by_name(name)
    if EXPERIMENT_KIND[0] not in found.tags:  # made by an older runner
        client.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND)
    return found.experiment_id


def unavailable(uri: str, e: Exception) -> str:
    """Why the store at `uri` cannot be used, and what to check."""
    reason = f"{type(e).__name__}: {first_line(e) or repr(e)}"
    if re.search(r"error code 40[13]\b", reason):
        return redact.text(
            f"MLflow tracking at {uri} refused the credentials ({reason}). Check "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN): "
            "401 means unknown user or wrong password, 403 a user without permission.")
    return redact.text(
        f"MLflow tracking at {uri} is unavailable: {reason}. Check mlflow.tracking_uri (or "
        "MLFLOW_TRACKING_URI), or run with mlflow.enabled=false.")


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """For a sqlite store, one process at a time, and the store made whole if it is missing
    (`create_sqlite_store`): the first use of a fresh store creates its tables, and processes
    doing so at once break it (alembic: 'table already exists'); two creating the experiment at
    once, one fails. Two sweeps started together do both."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    with open(db.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            create_sqlite_store(db)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def create_sqlite_store(db: Path) -> None:
    """If `db` is missing, make its tables in a file beside it and link that into place.

    A process that opens the store the moment its file appears (`mlflow ui`, a script polling
    it) then finds every table. With MLflow creating them in place (~4 s of migrations), such a
    reader created them too, at the same time, and failed ('table ... already exists', alembic's
    'expected to match one row'): 3 tries in 3. Two processes creating a store at once can
    also leave it broken for good (`_alembic_tmp_tags already exists` on every open)."""
    if db.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    made = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    made.unlink(missing_ok=True)
    try:
        # The default experiment's artifacts in the store's own folder, as configure() puts
        # the runner's (MLflow's default is ./mlruns, wherever a process runs).
        store = SqlAlchemyStore(f"sqlite:///{made}", database_artifacts(f"sqlite:///{db}"))
        store.engine.dispose()
        try:
            os.link(made, db)  # never over a store made meanwhile by a process not locking
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links
            if not db.exists():
                os.replace(made, db)
    finally:
        made.unlink(missing_ok=True)
