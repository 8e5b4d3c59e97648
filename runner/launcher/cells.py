"""A sweep's cells, composed once in the launching process before any starts.

Hydra's basic sweeper composes every cell of its batch to check it (`validate_batch_is_legal`),
then its launcher (basic, joblib, submitit) composes each again to run it: about 0.15 s a cell,
twice, before its job starts. `compose_all` composes them once, for the plan of the sweep's
shared trainings (runner.launcher.shared_training.plan), and has the config loader of this Hydra
run hand out copies of those configs for the same overrides. A cell that does not compose here
is composed by Hydra as before, and fails there with Hydra's own error.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf


def sweep_cells(overrides: list[str]) -> list[list[str]]:
    """The basic sweeper's cells for these sweep overrides (its params first), in job order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(overrides)
    return [list(cell) for batch in BasicSweeper.split_arguments(parsed, None) for cell in batch]


def compose_all(config: DictConfig, cells: list[list[str]]) -> list[DictConfig | None]:
    """Each cell's config as the launcher composes it (None: it does not compose), and from now
    on the same config, copied, wherever Hydra composes that cell in this process."""
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    composed: dict[tuple[str, ...], DictConfig] = {}
    found: list[DictConfig | None] = []
    for cell in cells:
        try:
            cfg = loader.load_sweep_config(config, list(cell))
        except Exception:  # noqa: BLE001 - Hydra composes it again and reports it
            found.append(None)
            continue
        composed[tuple(cell)] = cfg
        found.append(copy.deepcopy(cfg))
    loader.load_sweep_config = _reusing(loader.load_sweep_config, config,  # type: ignore[method-assign]
                                        composed)
    return found


def _reusing(compose: Callable[..., DictConfig], master: DictConfig,
             composed: dict[tuple[str, ...], DictConfig]) -> Callable[..., DictConfig]:
    def load_sweep_config(master_config: DictConfig, sweep_overrides: list[str]) -> Any:
        done = composed.get(tuple(sweep_overrides))
        if done is None or master_config is not master:
            return compose(master_config, sweep_overrides)
        again = copy.deepcopy(done)  # the launcher sets the job's number in it
        OmegaConf.copy_cache(from_config=master_config, to_config=again)
        return again

    return load_sweep_config
