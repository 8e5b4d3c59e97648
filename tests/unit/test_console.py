"""The console filter: TensorFlow's start-up lines once, no CUDA error without a GPU, and
everything else at once (progress bars included)."""

from __future__ import annotations

from runner.core.console import Filter, Seen

ABSL = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
CUDA = (b"I0000 00:00:1796160028.080154   18085 cudart_stub.cc:31] Could not find cuda drivers "
        b"on your machine, GPU will not be used.\n")
ONEDNN = (b"I0000 00:00:1796672509.709145    7508 port.cc:153] oneDNN custom operations are on. "
          b"You may see slightly different numerical results due to floating-point round-off "
          b"errors from different computation orders. To turn them off, set the environment "
          b"variable `TF_ENABLE_ONEDNN_OPTS=0`.\n")
CUINIT = b"E0000 00:00:1796160028.1   18085 cuda_executor.cc:1] failed call to cuInit: 303\n"


def test_start_up_lines_show_once_per_stream():
    noise = Filter(gpu=False, seen=Seen())
    out = noise.feed(ABSL + ONEDNN + CUDA + ABSL + ONEDNN + CUDA + b"PASSED\n") + noise.flush()
    assert out == ONEDNN + CUDA + b"PASSED\n"  # absl's notice: never


def test_cuinit_is_dropped_only_without_a_gpu():
    assert Filter(gpu=False, seen=Seen()).feed(CUINIT) == b""
    assert Filter(gpu=True, seen=Seen()).feed(CUINIT) == CUINIT


def test_a_progress_bar_passes_at_once_and_a_maybe_noise_line_waits_for_its_end():
    noise = Filter(gpu=False, seen=Seen())
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
        assert Filter(gpu=False, seen=Seen()).feed(line) == b""
        assert Filter(gpu=True, seen=Seen()).feed(line) == line
    other = b"2026-12-07 04:00:11.8: W tensorflow/core/x.cc:1] something else\n"
    assert Filter(gpu=False, seen=Seen()).feed(other) == other


def test_tensorflow_2_19s_linking_slip_is_dropped():
    line = (b"W0000 00:00:1796620225.480214    7712 computation_placer.cc:177] computation placer "
            b"already registered. Please check linkage and avoid linking the same target more "
            b"than once.\n")
    assert Filter(gpu=True, seen=Seen()).feed(line * 4) == b""


MIRRORED = (b"W0000 00:00:1796627541.877153   21521 dataset.cc:997] Input of GeneratorDatasetOp::"
            b"Dataset will not be optimized because the dataset does not implement the "
            b"AsGraphDefInternal() method needed to apply optimizations.\n")


def test_a_repeated_warning_shows_once_whatever_its_time_and_thread():
    noise = Filter(gpu=False, seen=Seen())
    again = MIRRORED.replace(b"1796627541.877153   21521", b"1796627545.985463   21530")
    other = MIRRORED.replace(b"optimizations", b"something else")
    assert noise.feed(MIRRORED + b"Epoch 1/2\n" + again + other) == (
        MIRRORED + b"Epoch 1/2\n" + other)


def test_a_repeated_python_warning_goes_with_its_source_line():
    warning = (b"/x/keras/src/trainers/epoch_iterator.py:160: UserWarning: Your input ran out "
               b"of data\n  self._interrupted_warning()\n")
    noise = Filter(gpu=False, seen=Seen())
    assert noise.feed(warning + b"Epoch 2/2\n" + warning + b"  indented, not after one\n") == (
        warning + b"Epoch 2/2\n" + b"  indented, not after one\n")


def test_the_processes_of_one_sweep_show_each_start_up_line_once(tmp_path):
    # Two Filters with their own memory, as two joblib workers have: the sweep's folder links them.
    first, second = Filter(gpu=False, seen=Seen(tmp_path)), Filter(gpu=False, seen=Seen(tmp_path))
    assert first.feed(ABSL + CUDA + MIRRORED) == CUDA + MIRRORED
    assert second.feed(ABSL + CUDA + MIRRORED + b"PASSED\n") == b"PASSED\n"
    # A job not in a sweep: its own memory only, so a new process shows them again.
    assert Filter(gpu=False, seen=Seen()).feed(CUDA) == CUDA


def test_errors_are_never_collapsed():
    error = b"E0000 00:00:1.2   7 some.cc:1] a real error\n"
    noise = Filter(gpu=True, seen=Seen())
    assert noise.feed(error + error) == error + error
