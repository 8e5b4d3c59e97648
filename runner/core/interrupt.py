"""Ctrl-C and SIGTERM: every process of a job ends, and the job is recorded as interrupted.

Two behaviours, one per kind of process:

- A job process (`runner.job`) and the launching process between jobs *raise*: SIGINT and
  SIGTERM become `Interrupted`, a KeyboardInterrupt, so the code in flight unwinds through its
  cleanup (the job records `interrupted` and its phase in result.json; Hydra and joblib stop
  the sweep).
- The Hydra task, while it watches a job's processes, *defers*: the signal is noted and
  forwarded to the job's processes, which record it themselves, and the task goes on closing
  the job (result.json, the MLflow run) before it raises. An exception in the middle of an
  MLflow call could leave a run RUNNING; a noted signal cannot.

Signal handlers belong to the main thread; elsewhere these functions leave the handlers alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM, raised like Ctrl-C so that the same cleanup runs."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def raise_on_signals(once: bool = False) -> None:
    """SIGINT and SIGTERM raise Interrupted. once=True: only the first does; later ones are
    ignored, so that recording the interruption is not itself interrupted."""
    if not _main_thread():
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        _raised.append(signum)
        if once:
            for s in SIGNALS:
                signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    _raised.clear()
    for s in SIGNALS:
        signal.signal(s, handler)


_raised: list[int] = []


def as_interruption(e: BaseException) -> BaseException:
    """`e`, or the Interrupted that `raise_on_signals` raised before it: library code can
    swallow that KeyboardInterrupt and fail otherwise (measured: SIGINT while Keras traces the
    first step of fit surfaced once in 24 tries as a TypeError from Flatten.call). Then the
    job was interrupted, and the failure that surfaced is kept as the cause."""
    if not _raised or isinstance(e, Interrupted):
        return e
    interrupted = Interrupted(_raised[0])
    interrupted.__cause__ = e
    return interrupted


_received: list[int] = []


def received() -> Interrupted | None:
    """The signal `deferred` noted, as the exception to record; None if none came."""
    return Interrupted(_received[0]) if _received else None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Note SIGINT/SIGTERM instead of raising while the block runs (see `received`); raise the
    noted one when the block ends, after its cleanup."""
    if not _main_thread():
        yield
        return
    _received.clear()

    def note(signum: int, frame: FrameType | None) -> None:
        if not _received:
            _received.append(signum)
            # os.write, not print: a handler may run in the middle of another print.
            os.write(2, f"\n{signal.Signals(signum).name}: stopping the job and recording it "
                        "(a few seconds)\n".encode())

    previous = {s: signal.signal(s, note) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    interrupted = received()
    _received.clear()
    if interrupted is not None:
        raise interrupted
