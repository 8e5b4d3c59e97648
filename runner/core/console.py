"""What a job prints, made readable: TensorFlow's start-up lines once per process, not twice, and
no `failed call to cuInit` on a machine without NVIDIA GPUs. job.log keeps everything;
`verbose=2` shows everything on the console too.
"""

from __future__ import annotations

import glob
import re

# Written by TensorFlow's C++ libraries before logging is set up (TF_CPP_MIN_LOG_LEVEL cannot
# hide them), once per library that loads CUDA's stubs: twice per `import tensorflow` here.
ONCE = (
    re.compile(rb"^WARNING: All log messages before absl::InitializeLog\(\) is called"),
    re.compile(rb"^[IWE]\d{4} .*cudart_stub\.cc:\d+\] Could not find cuda drivers"),
)
# TensorFlow looks for a CUDA device even where there is none, and says so as an error; other
# releases (a tf= environment: 2.15 to 2.19) say more at each import, some with a date in front.
_TF_LINE = rb"^(?:[IWE]\d{4} |\d{4}-\d\d-\d\d [\d:.]+: [EW] )"
NO_GPU = re.compile(_TF_LINE + rb".*(failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) "
                    rb"factory|TF-TRT Warning: Could not find TensorRT)")
# Said by TensorFlow 2.19 four times at each import (a linking slip of that release): no news.
NOISE = re.compile(_TF_LINE + rb".*computation placer already registered")
# A line that may turn out to be one of the above: held back until it is complete.
MAYBE = re.compile(rb"^(W(A(R(N(I(N(G(:.*)?)?)?)?)?)?)?|[IWE]\d{0,4}( .*)?)$", re.DOTALL)


def has_gpu() -> bool:
    """An NVIDIA device node: what CUDA's driver would open."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


class Filter:
    """Drops the noise lines from a stream of output chunks; everything else passes at once
    (Keras progress bars rewrite one line with '\\r' and must not wait for a line end)."""

    def __init__(self, gpu: bool | None = None) -> None:
        self.gpu = has_gpu() if gpu is None else gpu
        self.seen: set[int] = set()
        self.pending = b""

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
        if NOISE.match(line):
            return False
        if NO_GPU.match(line):
            return self.gpu
        for i, pattern in enumerate(ONCE):
            if pattern.match(line):
                if i in self.seen:
                    return False
                self.seen.add(i)
        return True
