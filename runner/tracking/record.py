"""What a job's MLflow run holds: its name, params, tags, metrics, datasets and files, from its
result.json and its output directory; and the digest that says a run holds a record whole
(runner.sync leaves such a run alone)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
from omegaconf import OmegaConf

from runner.core import files, redact
from runner.core.cluster import MULTI_WORKER
from runner.core.result import DIMENSIONS, EXTRA_DIMENSIONS, GROUPS, Result, variants
from runner.core.summary import outcome_code, verdict
from runner.core.text import first_line
from runner.tracking.curves import curves_figure

if TYPE_CHECKING:
    from runner.core.schema import Config

# A run's tag naming the result.json it holds (record_digest): runner.sync leaves such a run
# alone, and completes one without it (still RUNNING, or closed before its record was in).
RECORD_TAG = "runner.record"


# What a run's name leaves out when it is the default and no sweep varies it.
NAME_DEFAULTS = {"model": "sequential", "data": "digits"}


def run_name(cfg: Config, swept: list[str] | tuple[str, ...] = ()) -> str:
    """The combination at a glance, short enough for the runs table: e.g.
    'keras→saved_model v3 mirrored→none'; 'legacy→v3' where the generations differ; the model
    and the data only where they are not the defaults or a sweep varies them; 'from runs:/…'
    for load_from."""
    keras = cfg.keras.name if cfg.load_keras.name == cfg.keras.name else (
        f"{cfg.keras.name}→{cfg.load_keras.name}")
    extra = "".join(f" {cfg[group].name}" for group, default in NAME_DEFAULTS.items()
                    if cfg[group].name != default or group in swept)
    if cfg.load_from:
        return (f"from {cfg.load_from}→{cfg.load_api.name} {cfg.load_keras.name} "
                f"→{cfg.load_strategy.name}{extra}")[:250]
    return (f"{cfg.save_api.name}→{cfg.load_api.name} {keras} "
            f"{cfg.strategy.name}→{cfg.load_strategy.name}{extra}")


def swept_name(cfg: Config, overrides: list[str], swept: list[str]) -> str:
    """run_name, plus `key=value` for each swept key the name does not show yet, so that every
    job of a sweep has its own name."""
    name = run_name(cfg, swept)
    shown = {*GROUPS, "load_from"}
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in swept and key not in shown:
            name += f" {override.lstrip('+~')}"
    return name[:250]


def params(cfg: Config) -> dict[str, str]:
    """The resolved config as dotted keys, values cut to MLflow's length limit, less what the
    job did not use (the compare page lists every param, sorted: `cluster.*` came first):
    unset keys (null), `cluster.*` unless a side ran on several workers, and `runner.*` (how
    the runner ran its processes, not what the job did)."""
    flat = dict(_flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)))
    multi_worker = MULTI_WORKER in (cfg.strategy.name, cfg.load_strategy.name)
    return {k: redact.text(str(v))[:MAX_PARAM_VAL_LENGTH] for k, v in flat.items()
            if v is not None and not k.startswith("runner.")
            and (multi_worker or not k.startswith("cluster."))}


def model_name(tags: Mapping[str, Any]) -> str:
    """The name of a job's logged model: its cell, e.g. 'keras-v3-mirrored-sequential' (save
    API, Keras generation, training strategy, model); the Models list tells them apart."""
    parts = [str(tags.get(key) or "unknown") for key in ("save_api", "keras", "strategy", "model")]
    if tags.get("data") and tags["data"] != NAME_DEFAULTS["data"]:
        parts.append(tags["data"])
    return re.sub(r"[/:.%\"']", "-", "-".join(parts))


def start_tags(cfg: Config, output_dir: Path, overrides: list[str]) -> dict[str, str]:
    tags = {group: str(cfg[group].name) for group in GROUPS}
    tags.update({key: str(cfg[key]) for key in EXTRA_DIMENSIONS if cfg[key]})
    tags.update({key: value for key, value in variants(cfg).items() if value})
    tags.update({
        "status": "running",
        "overrides": " ".join(overrides) or "(defaults)",
        "output_dir": str(output_dir),
        "mlflow.note.content": command(overrides),
    })
    return tags


def command(overrides: list[str]) -> str:
    return f"python -m runner {' '.join(overrides)}".strip()


def result_tags(result: Result) -> dict[str, str]:
    versions = result.get("versions") or {}
    loaded = result.get("load_versions") or versions
    tags = {key: str(result[key]) for key in DIMENSIONS if result.get(key) is not None}
    outcome = f"{result['status'].upper()} — {verdict(result)}"
    tags.update({
        "status": result["status"],
        # The verdict in words, and first on the run page (its description), over the command.
        "verdict": outcome,
        "mlflow.note.content": f"**{outcome}**\n\n`{command(result.get('overrides') or [])}`",
        "tensorflow_version": str(versions.get("tensorflow")),
        "keras_version": str(versions.get("keras")),
        "tf_keras_version": str(versions.get("tf-keras")),
        # The load side's, from its own process (another release's environment: load_tf=).
        **{f"load_{dist.replace('-', '_')}_version": str(loaded.get(dist))
           for dist in ("tensorflow", "keras", "tf-keras")},
        "keras_module": str(result.get("keras_module")),
        "load_keras_module": str(result.get("load_keras_module")),
    })
    shared = result.get("trained_by")
    if shared:  # a sweep's shared training: whose model this cell loaded
        tags["trained_by"] = (f"job {shared.get('job')}"
                              + (f" (run {shared['mlflow_run_id']})"
                                 if shared.get("mlflow_run_id") else ""))
    if result.get("error"):
        tags.update(error_type=result["error"]["type"], error_phase=result["error"]["phase"],
                    error_message=first_line(result["error"]["message"])[:5000])
        if result["error"].get("hint"):
            tags["error_hint"] = result["error"]["hint"]
    resume = result.get("resume") or {}
    if resume.get("outcome"):
        tags["resume"] = resume["outcome"]
        cause = resume.get("cause") or resume.get("reason")
        if cause:
            tags["resume_cause"] = cause
    restart = result.get("interruption") or {}
    if restart.get("outcome"):  # save_api=backup_and_restore: killed and started again
        tags["restart"] = restart["outcome"]
        if restart.get("cause"):
            tags["restart_cause"] = restart["cause"]
    if result.get("distributed_variables"):
        tags["distributed_variables"] = result["distributed_variables"]
    mlflow_model = result.get("mlflow_model") or {}
    if mlflow_model.get("model_uri"):
        tags["mlflow_model_uri"] = mlflow_model["model_uri"]
    return tags


def steps(result: Result | Mapping[str, Any]) -> dict[str, int]:
    """Each phase's first step on the curves: continuing's epochs follow training's, as one
    `loss` and one `accuracy` series (a restarted training's history holds its last epochs)."""
    trained = epochs(result.get("history") or {}, "train")
    boundary = result.get("continue_from_step", trained)
    return {"train": boundary - trained, "continue": boundary}


def epochs(history: Mapping[str, Mapping[str, list[float]]], phase: str) -> int:
    """How many epochs of `phase` the history holds (its longest curve)."""
    return max(map(len, (history.get(phase) or {}).values()), default=0)


def metrics(result: Result, all_phases: bool = False, model_id: str | None = None,
            dataset: tuple[str, str] | None = None) -> Iterator[Metric]:
    """The job's outcome first; per-epoch curves (`loss`, `accuracy`, ...: training then
    continuing on one step axis) of the phases the job process did not log live (all of them,
    all_phases=True); `val_<metric>` on the test split where the job evaluated it (the end of
    training, the end of continuing); then the job's single numbers. Those are linked to the
    run's logged model `model_id` as MLflow's fluent log_metric links a run's step-0 metrics to
    its output model, the test split's ones also to its `dataset` (name, digest): the model's
    page shows them, and which data they were measured on."""
    now = get_current_time_millis()
    yield Metric("outcome", float(outcome_code(result)), now, 0, model_id=model_id)
    yield Metric("passed", float(result["status"] == "passed"), now, 0, model_id=model_id)
    on_data = dict(zip(("dataset_name", "dataset_digest"), dataset or (), strict=False))
    live = set() if all_phases else set(result.get("metrics_logged_live") or ())
    first = steps(result)
    history = result.get("history") or {}
    for phase, curves in history.items():
        if phase in live:
            continue
        for name, values in curves.items():
            for epoch, value in enumerate(values):
                yield Metric(name, float(value), now, first.get(phase, 0) + epoch)
    evaluated = {"after_train": first["continue"] - 1}
    continued = epochs(history, "continue")
    if continued:  # an inference-only load evaluated where training ended: no new point
        evaluated["after_continue"] = first["continue"] + continued - 1
    for when, step in evaluated.items():
        values = {"accuracy": (result.get("accuracy") or {}).get(when),
                  **((result.get("metrics") or {}).get(when) or {})}
        for name, value in values.items():
            if value is not None and step >= 0:
                yield Metric(f"val_{name}", float(value), now, step, model_id=model_id,
                             **on_data)
    tested = {f"accuracy_{k}": v for k, v in (result.get("accuracy") or {}).items()}
    for name, value in tested.items():
        if value is not None:
            yield Metric(name, float(value), now, 0, model_id=model_id, **on_data)
    singles = {
        **(result.get("timings") or {}),
        **(result.get("throughput") or {}),
        "max_abs_diff": result.get("max_abs_diff"),
        "artifact_bytes": result.get("artifact_bytes"),
        "resume_max_abs_diff": (result.get("resume") or {}).get("max_abs_diff"),
        "restart_max_abs_diff": (result.get("interruption") or {}).get("max_abs_diff"),
        "resave_max_abs_diff": (result.get("resave") or {}).get("max_abs_diff"),
        "pinned_devices": (result.get("pinned_devices") or {}).get("count"),
    }
    for name, value in singles.items():
        if value is not None:
            yield Metric(name, float(value), now, 0, model_id=model_id)


def complete(client: MlflowClient, run_id: str, result: Result, output_dir: Path,
             fresh: bool = False) -> None:
    """Everything of the job's record the run does not hold yet: metrics (per-epoch ones the job
    process logged live are not logged twice), tags, dataset inputs, files, and last the record
    tag. fresh=False (runner.sync): the run may hold part of it already; only what is missing
    is added, so completing twice changes nothing."""
    have_params: set[str] = set()
    have_inputs: set[str] = set()
    have_metrics: dict[str, set[tuple[int, float]]] = {}
    if fresh:
        model_id = logged_model_id(result)  # logged into this run by the relay, in this store
    else:
        existing = client.get_run(run_id)
        # runner.sync: result.json may name a model of the store the job ran with; this run's
        # own is the one it holds here, if any (logged live or rebuilt).
        outputs = existing.outputs.model_outputs if existing.outputs else []
        model_id = outputs[0].model_id if outputs else None
        have_params = set(existing.data.params)
        have_inputs = {d.dataset.name for d in existing.inputs.dataset_inputs}
        # (step, value) of each metric the run has: a step logged with the same value is not
        # logged again; the outcome's placeholder (NaN, logged at the start) is replaced.
        have_metrics = {key: {(m.step, m.value) for m in client.get_metric_history(run_id, key)}
                        for key in existing.data.metrics}
    inputs = dataset_inputs(result)
    linked = (inputs[0].dataset.name, inputs[0].dataset.digest) if inputs else None
    todo = [m for m in metrics(result, all_phases=not fresh, model_id=model_id, dataset=linked)
            if (m.step, m.value) not in have_metrics.get(m.key, ())]
    job_params = {"continue_from_step": str(steps(result)["continue"]),
                  **(result.get("fit_params") or {})} if result.get("history") else {}
    client.log_batch(run_id, metrics=todo, params=[
        Param(k, redact.text(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in job_params.items()
        if k not in have_params], tags=[
        RunTag(k, redact.text(v)) for k, v in result_tags(result).items()])
    resolved = files.hydra_file(output_dir)
    if not fresh and resolved.is_file():
        on_disk = params(OmegaConf.load(resolved))
        missing = [Param(k, v) for k, v in on_disk.items() if k not in have_params]
        if missing:
            client.log_batch(run_id, params=missing)
    inputs = [d for d in inputs if d.dataset.name not in have_inputs]
    if inputs:
        client.log_inputs(run_id, datasets=inputs)
    log_files(client, run_id, result, output_dir)
    client.set_tag(run_id, RECORD_TAG, record_digest(result))


def log_files(client: MlflowClient, run_id: str, result: Result,
              output_dir: Path) -> None:
    """The saved model as written, Hydra's configs, the logs, the result, curves, traceback."""
    for path in (output_dir / files.RESULT, output_dir / files.JOB_LOG,
                 output_dir / files.TRACEBACK, output_dir / files.WORKERS,
                 output_dir / files.MODEL_SUMMARY,
                 *sorted(output_dir.glob(files.worker_log("*")))):  # multi-worker: the others
        if path.exists():
            client.log_artifact(run_id, str(path))
    if (output_dir / files.HYDRA_DIR).is_dir():
        client.log_artifacts(run_id, str(output_dir / files.HYDRA_DIR), files.HYDRA_DIR)
    if (output_dir / files.SAVED_MODEL).is_dir():  # a load_from job saved nothing of its own
        client.log_artifacts(run_id, str(output_dir / files.SAVED_MODEL), files.SAVED_MODEL)
    if result.get("history"):
        client.log_figure(run_id, curves_figure(result["history"]), files.CURVES)


def dataset_inputs(result: Result) -> list[Any]:
    """Each side's data as an MLflow dataset input, so the runs table's Dataset column says
    what the job ran on: e.g. 'digits (train 1437, test 360)', context training / continue."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    inputs, names = [], set()
    for side, sizes in (result.get("data_sizes") or {}).items():
        name = f"{result.get('data')} (train {sizes['train']}, test {sizes['test']})"
        if name in names:  # both sides on the same data: one input (MLflow keeps one anyway)
            continue
        names.add(name)
        dataset = MetaDataset(CodeDatasetSource({"data": str(result.get("data"))}), name=name)
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[
            InputTag("mlflow.data.context", "training" if side == "train" else "continue")]))
    return inputs


def logged_model_id(result: Result) -> str | None:
    """The id of the logged model result.json says the job's run holds, if any."""
    logged = result.get("mlflow_model") or {}
    uri = str(logged.get("model_uri") or "") if logged.get("logged") else ""
    return uri.removeprefix("models:/") if uri.startswith("models:/") else None


def sweep_digest(done: list[Result]) -> str:
    """A digest of a sweep's record: its jobs' records."""
    return record_digest({"jobs": [record_digest(r) for r in done]})


def record_digest(result: Mapping[str, Any]) -> str:
    """A digest of what a run must hold of `result`, less the fields that say where the run is
    (runner.sync fills them in), not what the job did."""
    where = ("tracking", "mlflow_run_id", "mlflow_run_url")
    content = json.dumps({k: v for k, v in result.items() if k not in where}, sort_keys=True,
                         default=str)
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def _flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node
