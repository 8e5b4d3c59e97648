"""Every console line of a default job, a mirrored job and a 4-job sweep, as users run them:
TensorFlow's start-up notices once at most, no warning twice, epoch bars labelled, a verdict
in words. (The filter's rules themselves: tests/unit/test_console.py.)"""

from __future__ import annotations

import re
from collections import Counter

from helpers.run import runner

BAR = re.compile(r"^\r?\x1b\[1m\s*\d+/\d+")  # a Keras progress bar: one line, rewritten with \r
TF_LINE = re.compile(r"^[IWE]\d{4} [\d:.]+ +\d+ \S+\] (.*)$")
CUDA = "Could not find cuda drivers on your machine, GPU will not be used."
# On CPUs with AVX512_VNNI and newer, at each import of TensorFlow.
ONEDNN = ("oneDNN custom operations are on. You may see slightly different numerical results due "
          "to floating-point round-off errors from different computation orders. To turn them "
          "off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.")


def lines(proc) -> list[str]:
    """The console's lines as a terminal shows them ('\\r' rewrites a line, ends none)."""
    text = (proc.stdout + proc.stderr).decode()
    return [line for line in text.split("\n") if line]


def tf_lines(out: list[str]) -> list[str]:
    """TensorFlow's own log lines, less their time and thread prefix."""
    return [m.group(1) for m in map(TF_LINE.match, out) if m]


def test_a_default_job_prints_what_happened_and_little_else(tmp_path):
    proc = runner(f"hydra.run.dir={tmp_path}/run", f"mlflow.store_dir={tmp_path}/mlflow",
                  users_env=True, raw=True)
    assert proc.returncode == 0, (proc.stdout[-3000:] + proc.stderr[-3000:]).decode()
    out = lines(proc)
    kinds = Counter(
        "bar" if BAR.match(line) else "epoch" if re.fullmatch(r"Epoch [12]/2", line)
        else "tensorflow" if TF_LINE.match(line) else line.split(":")[0] for line in out)
    # Two labelled fits of two epochs, one bar each; the verdict; the run's link.
    assert kinds == {"bar": 4, "epoch": 4, "train": 1, "continue": 1,
                     "PASSED — loads and serves the same logits; resumes exactly": 1,
                     "MLflow run": 1, **({"tensorflow": kinds["tensorflow"]}
                                         if kinds["tensorflow"] else {})}, out
    assert "train: 2 epochs, no strategy" in out and "continue: 2 epochs, no strategy" in out
    # No absl notice; that no GPU is used, and that oneDNN is on, each once at most.
    said = tf_lines(out)
    assert set(said) <= {CUDA, ONEDNN} and len(said) == len(set(said)), said
    assert len(out) == 12 + len(said)


def test_a_mirrored_job_says_each_warning_once(tmp_path):
    proc = runner(f"hydra.run.dir={tmp_path}/run", "strategy=mirrored", "mlflow.enabled=false",
                  raw=True)
    assert proc.returncode == 0, (proc.stdout[-3000:] + proc.stderr[-3000:]).decode()
    out = lines(proc)
    said = Counter(tf_lines(out))
    assert said and max(said.values()) == 1, said  # the dataset warning of every replica: once
    assert re.search(r"^train: 2 epochs, MirroredStrategy \(\d+ replicas?\)$", "\n".join(out),
                     re.MULTILINE), out


def test_a_sweep_says_tensorflows_start_up_notices_once(tmp_path):
    proc = runner("-m", f"hydra.sweep.dir={tmp_path}/sweep", f"mlflow.store_dir={tmp_path}/mlflow",
                  "save_api=keras,saved_model", "load_api=keras,saved_model",
                  "train.epochs=1", "continue_epochs=1", raw=True)
    assert proc.returncode == 0, (proc.stdout[-3000:] + proc.stderr[-3000:]).decode()
    out = lines(proc)
    said = Counter(tf_lines(out))
    assert not said or max(said.values()) == 1, said  # 4 jobs, one banner at most
    assert not [line for line in out if "absl::InitializeLog" in line]
    assert Counter(line.split(":")[0] for line in out if line.startswith(("train:", "continue:"))) \
        == {"train": 4, "continue": 1}  # saved_model→saved_model serves for inference only
    verdicts = [line.split(" | ")[0] for line in out if line.startswith(("PASSED", "FAILED"))]
    assert sorted(verdicts) == [
        "FAILED — does not load", "FAILED — does not load",
        "PASSED — loads and serves the same logits; inference only: it cannot be trained further",
        "PASSED — loads and serves the same logits; resumes exactly: training continues where it "
        "stopped"]
    assert sum("this sweep's jobs in the runs list" in line for line in out) == 1
