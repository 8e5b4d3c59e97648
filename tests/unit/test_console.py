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


def test_an_older_releases_gpu_lines_are_dropped_without_a_gpu():
    # TensorFlow 2.15 (tf=v2.15's environment) at each import, as measured here.
    lines = [b"2026-12-07 04:00:04.247151: E external/local_xla/xla/stream_executor/cuda/"
             b"cuda_dnn.cc:9261] Unable to register cuDNN factory: Attempting to register "
             b"factory for plugin cuDNN when one has already been registered\n",
             b"2026-12-07 04:00:11.811149: W tensorflow/compiler/tf2tensorrt/utils/"
             b"py_utils.cc:38] TF-TRT Warning: Could not find TensorRT\n",
             # 2.16 to 2.19 say this one with a date in front too
             b"2026-12-07 04:25:56.054276: E external/local_xla/xla/stream_executor/cuda/"
             b"cuda_platform.cc:51] failed call to cuInit: INTERNAL: CUDA error\n",
             b"E0000 00:00:1796620225.460555    7712 cuda_dnn.cc:8579] Unable to register cuDNN "
             b"factory: Attempting to register factory for plugin cuDNN\n"]
    for line in lines:
        assert Filter(gpu=False).feed(line) == b""
        assert Filter(gpu=True).feed(line) == line
    other = b"2026-12-07 04:00:11.8: W tensorflow/core/x.cc:1] something else\n"
    assert Filter(gpu=False).feed(other) == other


def test_tensorflow_2_19s_linking_slip_is_dropped():
    line = (b"W0000 00:00:1796620225.480214    7712 computation_placer.cc:177] computation placer "
            b"already registered. Please check linkage and avoid linking the same target more "
            b"than once.\n")
    assert Filter(gpu=True).feed(line * 4) == b""
