"""`python -m runner [overrides]`: the Hydra entry point. Heavy work runs in a child process."""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from runner import interrupt, schema, sweep
from runner.app import run

schema.register()


_started: list[bool] = []  # whether Hydra composed the config and called main


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    _started.append(True)
    result = run(cfg)
    # A single run reports its outcome in the exit code; a multirun goes on past failed jobs.
    if result["status"] != "passed" and HydraConfig.get().mode == RunMode.RUN:
        raise SystemExit(1)


def entry() -> None:
    """main(), and whatever ends it early (Ctrl-C, SIGTERM, a launcher's error) closes the
    sweep it was running: no parent run left RUNNING, the finished jobs' matrix written."""
    interrupt.raise_on_signals()  # SIGTERM as well as Ctrl-C unwinds through the cleanup
    try:
        main()
    except BaseException as e:
        if isinstance(e, SystemExit) and e.code == 1 and not _started:  # Hydra refused the config
            for line in schema.valid_keys(sys.argv[1:]):
                print(line, file=sys.stderr)
        if not (isinstance(e, SystemExit) and e.code in (0, None)):
            try:
                sweep.close_unfinished(e)
            except Exception as close_error:  # the original error matters more
                print(f"Could not close the sweep: {close_error!r}", file=sys.stderr)
        if isinstance(e, KeyboardInterrupt):
            print(f"\n{e or 'interrupted'}", flush=True)
            raise SystemExit(getattr(e, "exit_code", 130)) from None
        raise


if __name__ == "__main__":
    entry()
