"""`python -m runner [overrides]`: the Hydra entry point. Heavy work runs in a child process."""

import atexit
import os
import sys
import threading

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from runner.core import help_page, interrupt, schema, targets
from runner.core.validate import valid_keys
from runner.launcher import sweep
from runner.launcher.task import run

schema.register()
help_page.install()


_started: list[RunMode] = []  # whether (and how) Hydra composed the config and called main


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    _started.append(HydraConfig.get().mode)
    result = run(cfg)
    # A single run reports its outcome in the exit code; a multirun goes on past failed jobs.
    if result["status"] != "passed" and HydraConfig.get().mode == RunMode.RUN:
        raise SystemExit(1)


def entry() -> None:
    """main(), and whatever ends it early (Ctrl-C, SIGTERM, a launcher's error) closes the
    sweep it was running: no parent run left RUNNING, the finished jobs' matrix written."""
    interrupt.raise_on_signals()  # SIGTERM as well as Ctrl-C unwinds through the cleanup
    targets.user_path()  # the user's package, found by every process the runner starts
    try:
        main()
    except BaseException as e:
        if isinstance(e, SystemExit) and e.code == 1 and not _started:  # Hydra refused the config
            for line in valid_keys(sys.argv[1:]):
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


def exit_now(code: int | str | None) -> None:
    """End a single job's process as Python would, less the teardown of every module it imported
    (MLflow's, SQLAlchemy's, matplotlib's: measured 1.5-1.9 s after the job's last line): threads
    joined and exit handlers run (the fork servers stopped, logs flushed), then os._exit. A
    sweep's process ends the usual way: its launcher may have worker processes to shut down."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    try:
        entry()
    except SystemExit as e:
        if _started != [RunMode.RUN]:
            raise
        exit_now(e.code)
    if _started == [RunMode.RUN]:
        exit_now(0)
