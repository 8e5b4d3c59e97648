"""The console filter: TensorFlow's start-up lines once, no CUDA error without a GPU, and
everything else at once (progress bars included)."""

from __future__ import annotations

from runner.core.console import Filter

ABSL = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
CUDA = (b"I0000 00:00:1796160028.080154   18085 cudart_stub.cc:31] Could not find cuda drivers "
        b"on your machine, GPU will not be used.\n")
CUINIT = b"E0000 00:00:1796160028.1   18085 cuda_executor.cc:1] failed call to cuInit: 303\n"


def test_start_up_lines_show_once_per_stream():
    noise = Filter(gpu=False)
    out = noise.feed(ABSL + CUDA + ABSL + CUDA + b"PASSED\n") + noise.flush()
    assert out == ABSL + CUDA + b"PASSED\n"


def test_cuinit_is_dropped_only_without_a_gpu():
    assert Filter(gpu=False).feed(CUINIT) == b""
    assert Filter(gpu=True).feed(CUINIT) == CUINIT


def test_a_progress_bar_passes_at_once_and_a_maybe_noise_line_waits_for_its_end():
    noise = Filter(gpu=False)
    assert noise.feed(b"\r 3/23 [==>....] - loss: 0.3") == b"\r 3/23 [==>....] - loss: 0.3"
    assert noise.feed(CUINIT[:12]) == b""  # could be noise: held back
    assert noise.feed(CUINIT[12:]) == b""  # it was
    assert noise.feed(b"W") == b""
    assert noise.feed(b"hat next\n") == b"What next\n"
