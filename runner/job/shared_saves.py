"""The saves a sweep's shared training makes for its other cells (runner.core.trainings): one per
save side the sweep's plan lists besides this cell's own, each in the training's folder, each
with the result its cells start from, published once its model is whole (or its save failed)."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf, open_dict

from runner.core import trainings
from runner.core.result import Result
from runner.job import failure

if TYPE_CHECKING:
    from runner.core.schema import Config


@dataclass
class OtherSave:
    key: str
    cfg: Config  # the job's config with this save's save side
    folder: Path  # where its saved_model/ goes
    result: Result  # the training's record, then this save's

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.result["phase"] = name
        yield

    @property
    def saved(self) -> bool:
        return not self.result.get("error")

    def fail(self, e: Exception) -> None:
        """As the job process records a failure: error, hint, traceback (in its folder)."""
        failure.record(self.result, e, self.folder, self.cfg, "train")


def shared() -> tuple[Path, str] | None:
    """The folder of the shared training this process runs, and its own save's key."""
    where, mine = os.environ.get(trainings.FOLDER_ENV), os.environ.get(trainings.SAVE_ENV)
    return (Path(where), mine) if where and mine else None


def others(cfg: Config, result: Result) -> list[OtherSave]:
    """The other saves of this process's shared training, each starting from `result` (the
    training's record before any save); [] for a training of one save."""
    found = shared()
    if found is None:
        return []
    where, mine = found
    made = []
    for key, side in sorted(trainings.planned(where).items()):
        if key == mine:
            continue
        other: Any = copy.deepcopy(cfg)
        with open_dict(other):
            other.save_api = OmegaConf.create(side["save_api"])
            other.io_device = side["io_device"]
        snapshot = copy.deepcopy(result)
        snapshot["save_api"], snapshot["io_device"] = other.save_api.name, other.io_device
        (where / key).mkdir(parents=True, exist_ok=True)
        made.append(OtherSave(key, other, where / key, snapshot))
    return made


def publish(made: list[OtherSave]) -> None:
    """Each other save, whole or failed: its cells may go on."""
    found = shared()
    assert found is not None or not made
    for other in made:
        if other.saved:
            other.result["phase"] = "load"
        trainings.publish(found[0], other.key, other.result, other.folder)
