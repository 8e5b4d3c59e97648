"""The runner's config composed outside its Hydra app: for the user commands that read part of
it (runner.report, runner.sync: its `mlflow`), and for a config error's list of valid keys."""

from __future__ import annotations

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from runner.core import schema
from runner.core.files import CONF_DIR


def compose(overrides: list[str]) -> DictConfig:
    """The config `python -m runner OVERRIDES` would run with (without Hydra's own node)."""
    schema.register()  # the config's option files extend the schema's nodes
    GlobalHydra.instance().clear()  # a Hydra app that failed leaves its instance behind
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def mlflow_config(tracking_uri: str | None = None, store_dir: str | None = None,
                  experiment: str | None = None) -> DictConfig:
    """The runner's own `mlflow` config (its defaults and MLFLOW_TRACKING_URI), with what a
    command's flags give."""
    overrides = [f"mlflow.{key}={value}" for key, value in (
        ("tracking_uri", tracking_uri), ("store_dir", store_dir),
        ("experiment_name", experiment)) if value]
    return compose(overrides).mlflow
