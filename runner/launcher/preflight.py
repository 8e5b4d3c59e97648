"""Before Hydra creates anything: the config's ranges and the output directory, each failing
with one message and exit code 2, so that a bad value never leaves a half-made job behind; and
before any training, the save API save_api=auto stands for, or a warning for a combination
known to fail."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from runner.core import cluster, hints
from runner.core.compose import name_own_options, pair_save_api
from runner.core.files import PROBE, RESULT, SAVED_MODEL
from runner.core.releases import LibrarySet
from runner.core.validate import ConfigError, check_releases, validate, validate_sweep
from runner.launcher import environments
from runner.launcher.sweep import sweep_override_texts

if TYPE_CHECKING:
    from runner.core.schema import Config


class Preflight(Callback):
    """Hydra's callback: the checks below, once for a run, once for a whole sweep."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # First: the load side's generation decides which releases it can run in (load_tf).
        choose_load_keras(config, list(config.hydra.overrides.task))
        check_config(config)
        check_output_dir(Path(config.hydra.run.dir), "hydra.run.dir",
                         fresh=not cluster.non_chief(config), saves=not config.load_from)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_config(config, list(config.hydra.overrides.task), sweep_override_texts(config))
        check_output_dir(Path(config.hydra.sweep.dir), "hydra.sweep.dir", fresh=False)


def check_config(cfg: Config, sweep_overrides: list[str] | None = None,
                 swept: list[str] | None = None) -> None:
    """The config's ranges (and, for a sweep, those of every value it sweeps): exit 2 if not;
    then the releases of its sides (`swept`: every override of a sweep, its sweeper's params
    included), their environments built. The user's own model and data options are named first
    (`name_own_options`)."""
    hydra_node = cfg.get("hydra") if "hydra" in cfg.keys() else None
    choices = (hydra_node.runtime.choices if hydra_node is not None
               else HydraConfig.get().runtime.choices)
    name_own_options(cfg, dict(choices))
    try:
        validate(cfg)
        if sweep_overrides:
            validate_sweep(sweep_overrides)
        needed = check_releases(cfg, swept, dict(choices).get("load_tf"))
    except ConfigError as e:
        print(f"Config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    build_environments(cfg, needed)


def build_environments(cfg: Config, needed: list[LibrarySet]) -> None:
    """The environments of the releases the job (or every job of the sweep) runs a side in,
    built now if missing: a package index out of reach fails here, before any job, exit 2."""
    for found in needed:
        try:
            environments.ensure(found, cfg.runner.envs_dir)
        except environments.BuildError as e:
            print(f"Environment error: {e}\nNothing ran. Once the index is reachable: "
                  f"python -m runner.envs build {found.name}", file=sys.stderr)
            raise SystemExit(2) from None


def check_output_dir(directory: Path, key: str, fresh: bool, saves: bool = False) -> None:
    """`directory` can be created and written; fresh=True: it holds no earlier job's result;
    saves=True: no saved_model/ folder either, which the job's save could not replace (it
    failed in `save`, after the whole training)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        print(f"Output directory error: cannot write to {directory} ({type(e).__name__}: "
              f"{e.strerror or e}). Choose another with {key}=DIR.", file=sys.stderr)
        raise SystemExit(2) from None
    if fresh and (directory / RESULT).exists():
        print(f"Output directory error: {directory} already holds a job ({RESULT}); "
              f"choose another with {key}=DIR, or remove it.", file=sys.stderr)
        raise SystemExit(2)
    if fresh and saves and (directory / SAVED_MODEL).exists():
        print(f"Output directory error: {directory} already holds a {SAVED_MODEL}/ folder, "
              f"where this job saves its model; choose another with {key}=DIR, or move it.",
              file=sys.stderr)
        raise SystemExit(2)


def choose_save_api(cfg: Config) -> None:
    """save_api=auto becomes the save API the seed pairs with the load API; an explicit save API
    known not to write what the load API reads gets a one-line warning before any training
    (the job still runs: its failure is data)."""
    if cfg.load_from or pair_save_api(cfg):
        return
    expected = hints.expected_failure(cfg.save_api.name, cfg.load_api.name, cfg.keras.name,
                                      cfg.load_keras.name,
                                      bool(cfg.save_api.get("weights_only", False)))
    if expected:
        print(f"Warning: save_api={cfg.save_api.name} load_api={cfg.load_api.name} "
              f"(keras={cfg.keras.name}) is {expected}.", file=sys.stderr, flush=True)


def choose_load_keras(cfg: Config, overrides: list[str]) -> None:
    """A model saved outside the runner is loaded in a process of the Keras generation that
    wrote it, where its files say (a .keras archive's or an .h5 file's keras_version, a tf_keras
    SavedModel's keras_metadata.pb); `load_keras=` on the command line overrides."""
    if not cfg.load_from or any(o.split("=", 1)[0].lstrip("+~") == "load_keras"
                                for o in overrides):
        return
    from runner.job.scan import native_format, written_by  # reads files; no TensorFlow

    location = Path(str(cfg.load_from)).expanduser()
    if not location.exists() or not native_format(location) or any(
            (p / PROBE).is_file() for p in (location, location.parent)):
        return
    generation = written_by(location)
    if generation and generation != cfg.load_keras.name:
        print(f"load_from={cfg.load_from}: written by keras={generation}; loading it in a "
              f"load_keras={generation} process (load_keras=... chooses another)", flush=True)
        cfg.load_keras.name = generation
