"""A sweep's cells composed once (runner.launcher.cells): Hydra's later compositions of the same
cells get copies equal to what Hydra itself composes."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from runner.core import schema
from runner.core.files import CONF_DIR
from runner.launcher.cells import compose_all, sweep_cells


def test_hydra_gets_copies_of_the_cells_composed_once():
    schema.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        master = compose("config", ["experiment=matrix"], return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()
        fresh = loader.load_sweep_config
        cells = sweep_cells(["save_api=keras,export", "keras=v3,legacy", "load_api=hub",
                             "model=not_a_model,sequential"])
        assert len(cells) == 8 and cells[0] == ["save_api=keras", "keras=v3", "load_api=hub",
                                                "model=not_a_model"]
        composed = compose_all(master, cells)
        assert [c is None for c in composed] == [True, False] * 4  # no such model: Hydra's own
        for cell, cfg in zip(cells[1::2], composed[1::2], strict=True):
            again = loader.load_sweep_config(master, cell)
            assert again is not cfg and OmegaConf.to_yaml(again) == OmegaConf.to_yaml(
                fresh(master, cell))
            assert again.save_api.name == cell[0].split("=")[1]
            again.hydra.job.num = 5  # as the launcher does: the next copy is untouched
            assert OmegaConf.is_missing(loader.load_sweep_config(master, cell).hydra.job, "num")
    GlobalHydra.instance().clear()
