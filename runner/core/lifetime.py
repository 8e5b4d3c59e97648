"""No job process outlives the runner that started it, however the runner dies."""

from __future__ import annotations

import ctypes
import os
import signal

PARENT_ENV = "RUNNER_PARENT_PID"  # set for every job process the Hydra task starts
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a job process, first thing: ask Linux for SIGKILL when the runner that started it
    dies, however it dies (SIGKILL included), so that no job process is left behind: not a
    training nobody records, not a worker waiting on a collective.
    (Done here rather than in Popen's preexec_fn, which is unsafe in a threaded launcher.)"""
    parent = os.environ.get(PARENT_ENV)
    if parent is None:
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the runner's own cleanup still applies
        return
    if os.getppid() != int(parent):  # the runner died before the request took effect
        os._exit(1)
