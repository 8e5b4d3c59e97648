"""The runner's config composed outside its Hydra app: for the user commands that read part of
it (runner.report, runner.sync: its `mlflow`), and for a config error's list of valid keys; and
what the launching process settles in a composed config before a job runs it (also for a sweep's
plan of its shared trainings, which composes every cell before any starts)."""

from __future__ import annotations

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from runner.core import hints, schema, targets
from runner.core.apis import AUTO
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


def pair_save_api(cfg: DictConfig) -> bool:
    """save_api=auto becomes the save API the seed pairs with the load API; whether it was."""
    if cfg.save_api.name != AUTO:
        return False
    cfg.save_api.name = hints.paired_save_api(cfg.load_api.name)
    cfg.save_api.paired_with = cfg.load_api.name
    return True


def name_own_options(cfg: DictConfig, choices: dict[str, str | None]) -> None:
    """A model or data option of the user's gets the name results, the matrix and MLflow show:
    its own `name`, else the option chosen (model=my_model), else the target's short name."""
    for group in schema.TARGET_GROUPS:
        node = cfg[group]
        if (targets.is_target(node) and not OmegaConf.is_missing(node, targets.TARGET)
                and not node.get("name")):
            with open_dict(node):
                node.name = targets.option_name(node, choices.get(group))
