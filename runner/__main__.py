"""`python -m runner [overrides]`: the Hydra entry point. Heavy work runs in a child process."""

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from runner import schema
from runner.app import run

schema.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    # A single run reports its outcome in the exit code; a multirun goes on past failed jobs.
    if result["status"] != "passed" and HydraConfig.get().mode == RunMode.RUN:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
