"""The job's data prepared once per process and its test passes compiled: the same numbers as
the eager loop and as a new process's data (#28). Real TensorFlow, in a fresh process each,
with 2 logical CPUs for MirroredStrategy."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers.run import ROOT

PRELUDE = """
import json
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from runner.core.compose import compose
from runner.job import accuracy as acc
from runner.job import data
"""

ACCURACY = PRELUDE + """
tf.keras.utils.set_random_seed(0)
cfg = compose(["data=synthetic", "data.n_train=64", "data.n_test=1250"])
test = data.load(cfg, 64).test  # 20 batches, the last of 34: compiled, then eager
model = tf.keras.Sequential([tf.keras.Input((28, 28, 1)), tf.keras.layers.Conv2D(4, 3),
                             tf.keras.layers.Flatten(), tf.keras.layers.Dense(10)])
predict = lambda x: model(x, training=False)

def eager():
    correct = total = 0
    for images, labels in test:
        correct += int(acc._hits(predict(images), labels))
        total += int(labels.shape[0])
    return correct / total

def fixed(images):  # a serving signature of one batch size: the last batch must fail as it did
    tf.debugging.assert_equal(tf.shape(images)[0], 64, message="batch size must be 64")
    return predict(images)

try:
    acc.accuracy(fixed, test)
    fixed_error = None
except Exception as e:
    fixed_error = [type(e).__name__, "batch size must be 64" in str(e)]
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
print(json.dumps({"eager": eager(), "compiled": acc.accuracy(predict, test),
                  "distributed": acc.distributed_accuracy(predict, test, mirrored),
                  "long": acc._long(test), "fixed_error": fixed_error}))
"""

DATA = PRELUDE + """
cfg = compose(["data=digits"])
def order(d):
    return [b[1].numpy().tolist() for b in d.train], [b[1].numpy().tolist() for b in d.test]
trained = data.load(cfg, 64)
first = order(trained)  # the training side reads it whole: the cache is complete
again = order(data.load(cfg, 128))  # the load side, two replicas: from the same cache
data._prepared.clear()
fresh = order(data.load(cfg, 128))  # what a process of its own would read
print(json.dumps({"same_as_fresh": again == fresh, "shared": len(data._prepared) == 1,
                  "batch_128": len(again[0][0]) == 128, "first_differs": first != again}))
"""


def run(script: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_compiled_accuracy_counts_what_the_eager_loop_counts():
    found = run(ACCURACY)
    assert found["long"]
    assert found["compiled"] == found["eager"] == found["distributed"]
    # The batch the compiled step cannot run fails eagerly, with its own message.
    assert found["fixed_error"] == ["InvalidArgumentError", True]


def test_the_load_side_rebatches_the_same_prepared_data_as_a_new_process_would():
    found = run(DATA)
    assert found == {"same_as_fresh": True, "shared": True, "batch_128": True,
                     "first_differs": True}
