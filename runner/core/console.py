"""What a job prints, made readable: TensorFlow's start-up lines and each warning once per sweep
(or per job), not once per process that imports TensorFlow, no absl logging notice, and no
`failed call to cuInit` on a machine without NVIDIA GPUs. job.log keeps everything; `verbose=2`
shows everything on the console too.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from pathlib import Path

# Written by TensorFlow's C++ libraries before logging is set up (TF_CPP_MIN_LOG_LEVEL cannot
# hide them), once per library that loads CUDA's stubs: twice per `import tensorflow` here.
# absl's says nothing about the job: never shown. That no GPU will be used is news, once; so is
# that oneDNN's kernels are on (CPUs with AVX512_VNNI and newer: numbers may differ in their last
# bits from another machine's), said at each import on such a CPU.
ABSL = re.compile(rb"^WARNING: All log messages before absl::InitializeLog\(\) is called")
ONCE = (
    re.compile(rb"^[IWE]\d{4} .*cudart_stub\.cc:\d+\] Could not find cuda drivers"),
    re.compile(rb"^(?:[IWE]\d{4} |\d{4}-\d\d-\d\d [\d:.]+: [IWE] ).*\] oneDNN custom operations "
               rb"are on"),
)
# TensorFlow looks for a CUDA device even where there is none, and says so as an error; other
# releases (a tf= environment: 2.15 to 2.19) say more at each import, some with a date in front.
_TF_LINE = rb"^(?:[IWE]\d{4} |\d{4}-\d\d-\d\d [\d:.]+: [EW] )"
NO_GPU = re.compile(_TF_LINE + rb".*(failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) "
                    rb"factory|TF-TRT Warning: Could not find TensorRT)")
# Said by TensorFlow 2.19 four times at each import (a linking slip of that release): no news.
NOISE = re.compile(_TF_LINE + rb".*computation placer already registered")
# Lines said again by every process, every job, every replica: shown the first time only. The
# key leaves out what differs between two sayings (TensorFlow's time and thread prefix).
_TF_PREFIX = re.compile(rb"^[IW]\d{4} [\d:.]+ +\d+ (.*)$", re.DOTALL)
_DATED = re.compile(rb"^\d{4}-\d\d-\d\d [\d:.]+: [IW] (.*)$", re.DOTALL)
_REPEATABLE = re.compile(rb"^(WARNING:|\S+\.py:\d+: \w*Warning: )")
# The code line Python's warnings module prints under a warning: it goes where its warning goes.
_WARNING_SOURCE = re.compile(rb"^[ \t]+\S")
# Set by a sweep (runner.launcher.sweep): a folder whose files say which lines a job of the
# sweep has shown already, so that joblib's worker processes show each once too.
SEEN_DIR_ENV = "RUNNER_CONSOLE_SEEN_DIR"
# A line that may turn out to be one of the above: held back until it is complete.
MAYBE = re.compile(rb"^(W(A(R(N(I(N(G(:.*)?)?)?)?)?)?)?|[IWE]\d{0,4}( .*)?)$", re.DOTALL)


def has_gpu() -> bool:
    """An NVIDIA device node: what CUDA's driver would open."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


class Seen:
    """Which repeatable lines were shown: in this process, and in the sweep's folder if any."""

    def __init__(self, folder: Path | None = None) -> None:
        self.keys: set[bytes] = set()
        self.folder = folder

    def first(self, key: bytes) -> bool:
        """Whether `key` is seen for the first time (and now it is seen)."""
        if key in self.keys:
            return False
        self.keys.add(key)
        if self.folder is None:
            return True
        name = hashlib.sha256(key).hexdigest()[:24]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.folder / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        except OSError:  # a folder we cannot write: this process's memory still counts
            return True
        return True


_process_seen: dict[str, Seen] = {}


def seen_here() -> Seen:
    """The process's record of shown lines, shared with the sweep's other processes."""
    folder = os.environ.get(SEEN_DIR_ENV, "")
    if folder not in _process_seen:
        _process_seen[folder] = Seen(Path(folder) if folder else None)
    return _process_seen[folder]


def repeat_key(line: bytes) -> bytes | None:
    """What makes two sayings of a repeatable line the same; None for a line always shown."""
    for pattern in (_TF_PREFIX, _DATED):
        found = pattern.match(line)
        if found:
            return found.group(1).rstrip()
    if _REPEATABLE.match(line):
        return line.rstrip()
    return None


class Filter:
    """Drops the noise lines from a stream of output chunks; everything else passes at once
    (Keras progress bars rewrite one line with '\\r' and must not wait for a line end)."""

    def __init__(self, gpu: bool | None = None, seen: Seen | None = None) -> None:
        self.gpu = has_gpu() if gpu is None else gpu
        self.seen = seen_here() if seen is None else seen
        self.pending = b""
        self.dropped_warning = False  # the last line: a repeated warning (its source line goes)

    def feed(self, chunk: bytes) -> bytes:
        data, out = self.pending + chunk, []
        self.pending = b""
        for line in data.splitlines(keepends=True):
            if line.endswith((b"\n", b"\r")):
                out.append(line if self.keep(line) else b"")
            elif MAYBE.match(line):
                self.pending = line  # the start of a line that may be noise: wait for its end
            else:
                out.append(line)
        return b"".join(out)

    def flush(self) -> bytes:
        data, self.pending = self.pending, b""
        return data if self.keep(data) else b""

    def keep(self, line: bytes) -> bool:
        after_dropped, self.dropped_warning = self.dropped_warning, False
        if after_dropped and _WARNING_SOURCE.match(line):
            return False
        if NOISE.match(line) or ABSL.match(line):
            return False
        if NO_GPU.match(line):
            return self.gpu
        for i, pattern in enumerate(ONCE):
            if pattern.match(line):
                return self.seen.first(b"once %d" % i)
        key = repeat_key(line)
        if key is not None and not self.seen.first(key):
            self.dropped_warning = True
            return False
        return True
