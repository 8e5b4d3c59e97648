"""Data the tests prepare for themselves (no network)."""

# A TFDS data_dir holding a small prepared `mnist` (random pixels), written by TFDS itself, which
# the real builder then reads offline: `python -c PREPARE_MNIST DIR`.
PREPARE_MNIST = """
import sys
import numpy as np, tensorflow as tf, tensorflow_datasets as tfds
rng = np.random.default_rng(0)
def split(n):
    return tf.data.Dataset.from_tensor_slices({
        "image": rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
        "label": rng.integers(0, 10, n)})
tfds.dataset_builders.store_as_tfds_dataset(
    name="mnist", version="3.0.1", features=tfds.builder("mnist").info.features,
    split_datasets={"train": split(256), "test": split(128)}, data_dir=sys.argv[1])
"""
