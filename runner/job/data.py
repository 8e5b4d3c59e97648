"""The data: scikit-learn's digits (offline default), TFDS MNIST, or MNIST-shaped synthetic
data, as tf.data pipelines."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from runner.core.text import first_line

if TYPE_CHECKING:
    from runner.core.schema import Config


class DataUnavailableError(RuntimeError):
    """The dataset could not be read; the message says how to get it."""


@dataclass
class Data:
    train: tf.data.Dataset  # batched, shuffled (image float32 [0,1] 28x28x1, label int)
    test: tf.data.Dataset  # batched, in a fixed order
    probe: np.ndarray  # the first `probe_size` test images: logits are compared on these
    n_train: int
    n_test: int
    ordered: tf.data.Dataset  # the training split unbatched, in its stored order (resume check)


def load(cfg: Config, global_batch: int) -> Data:
    """Datasets batched for `global_batch` = per-replica batch x replicas of the strategy in use."""
    if cfg.data.name == "digits":
        train, test = _digits(cfg.data.test_fraction, cfg.seed)
    elif cfg.data.name == "synthetic":
        train, test = _synthetic(cfg.data.n_train, cfg.data.n_test, cfg.seed)
    else:
        train, test = _mnist(cfg.data.data_dir, cfg.data.download)
    n_train, n_test = int(train.cardinality()), int(test.cardinality())
    calls = tf.data.AUTOTUNE if cfg.speed.parallel_map else None  # order stays deterministic
    ordered = train.map(scale)  # not from the cache: a partial read would leave it unfinished
    train = train.map(scale, num_parallel_calls=calls).cache()
    test = test.map(scale, num_parallel_calls=calls)
    if cfg.data.name == "mnist":
        check_complete({"train": train, "test": test}, cfg.data.data_dir)
    train = train.shuffle(cfg.data.shuffle_buffer, seed=cfg.seed).batch(global_batch)
    probe = next(iter(test.batch(cfg.verify.probe_size)))[0].numpy()
    test = test.batch(global_batch)
    if cfg.speed.prefetch:
        train, test = train.prefetch(tf.data.AUTOTUNE), test.prefetch(tf.data.AUTOTUNE)
    return Data(train=train, test=test, probe=probe, n_train=n_train, n_test=n_test,
                ordered=ordered)


_TF_FUNCTION = re.compile(r"\{\{function_node [^}]*\}\}\s*")  # TF's prefix: no news to users


def check_complete(splits: dict[str, tf.data.Dataset], data_dir: str | None) -> None:
    """Read every example once, in the data phase: TFDS reads its files lazily, so a truncated
    or damaged file would otherwise fail in the middle of training, naming no file. The train
    split is read through its cache, which training then reuses: no example is read twice."""
    for split, dataset in splits.items():
        try:
            dataset.reduce(0, lambda n, _: n + 1)
        except tf.errors.OpError as e:
            reason = _TF_FUNCTION.sub("", first_line(e.message))
            raise DataUnavailableError(
                f"MNIST's {split} split in {data_dir or 'the default TFDS data_dir'} is "
                f"incomplete or damaged: {type(e).__name__}: {reason}. Prepare "
                "it again (see data=mnist in the README), or use data=digits.") from e


def scale(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The seed's preprocessing: uint8 pixels to float32 in [0, 1]."""
    image = tf.cast(image, tf.float32)
    image /= 255
    return image, label


def _digits(test_fraction: float, seed: int) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8x8 pixels in 0..16 -> 28x28x1 in 0..255, then the same `scale` as MNIST.
    images = tf.image.resize(digits.images[..., None] * (255 / 16), (28, 28)).numpy()
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = int(round(len(images) * test_fraction))
    test_idx, train_idx = order[:n_test], order[n_test:]

    def dataset(idx: np.ndarray) -> tf.data.Dataset:
        pairs = (images[idx], digits.target[idx].astype(np.int64))
        return tf.data.Dataset.from_tensor_slices(pairs)

    return dataset(train_idx), dataset(test_idx)


def _synthetic(n_train: int, n_test: int,
               seed: int) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """MNIST's shapes and types, made from `seed`: each class a random pattern plus noise."""
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 256, size=(10, 28, 28, 1), dtype=np.uint8)

    def dataset(n: int) -> tf.data.Dataset:
        labels = rng.integers(0, 10, size=n)
        noise = rng.integers(0, 128, size=(n, 28, 28, 1), dtype=np.uint8)
        images = patterns[labels] // 2 + noise  # at most 127 + 127: stays uint8
        return tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))

    return dataset(n_train), dataset(n_test)


def _mnist(data_dir: str | None, download: bool) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    where = data_dir or "the default TFDS data_dir (TFDS_DATA_DIR or ~/tensorflow_datasets)"
    try:
        try:  # a prepared copy needs no network
            train, test = _tfds_mnist(data_dir, download=False)
        except Exception:
            if not download:
                raise
            # Offline, TFDS retries each download for minutes: fail within seconds instead.
            _check_reachable(MNIST_HOST)
            train, test = _tfds_mnist(data_dir, download=True)
    except Exception as e:  # TFDS raises many types offline; all end in the same advice.
        raise DataUnavailableError(
            f"MNIST could not be loaded from {where} (download={download}): "
            f"{type(e).__name__}: {first_line(e)}. Without a network, TFDS cannot download "
            "it. Remedies: prepare it once on a machine with a network (python -c \"import "
            "tensorflow_datasets as tfds; tfds.load('mnist', data_dir='DIR')\"), copy DIR here "
            "and run with data.data_dir=DIR data.download=false; or use the bundled offline "
            "data with data=digits."
        ) from e
    return train, test


def _tfds_mnist(data_dir: str | None, download: bool) -> list[tf.data.Dataset]:
    import tensorflow_datasets as tfds

    return tfds.load("mnist", split=["train", "test"], as_supervised=True,
                     data_dir=data_dir, download=download)


MNIST_HOST = "storage.googleapis.com"  # where TFDS's mnist builder downloads from


def _check_reachable(host: str, timeout: float = 10.0) -> None:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"cannot reach {host}:443 ({e})") from e
