"""The data: scikit-learn's digits (offline default), TFDS MNIST, MNIST-shaped synthetic data,
or the user's own (`data._target_`), as tf.data pipelines."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from runner.core import targets
from runner.core.text import first_line
from runner.job import nested

if TYPE_CHECKING:
    from runner.core.schema import Config


class DataUnavailableError(RuntimeError):
    """The dataset could not be read; the message says how to get it."""


@dataclass
class Data:
    train: tf.data.Dataset  # batched, shuffled (image float32 [0,1] 28x28x1, label int)
    test: tf.data.Dataset  # batched, in a fixed order
    probe: Any  # the first `probe_size` test inputs (an array, or a tree of them): logits are
    # compared on these
    n_train: int
    n_test: int
    ordered: tf.data.Dataset  # the training split unbatched, in its stored order (resume check)


def load(cfg: Config, global_batch: int) -> Data:
    """Datasets batched for `global_batch` = per-replica batch x replicas of the strategy in use.

    Both sides of a job in one process share the prepared splits (`prepared`): the load side
    re-batches the same cached training split for its own global batch, shuffled afresh with the
    same seed, so it sees the order a new process would and skips generating and caching it
    again (measured on MNIST-sized synthetic data: its first pass 0.27 s, against 5.17 s for
    splits prepared afresh)."""
    splits = prepared(cfg)
    shuffle_buffer = cfg.data.get("shuffle_buffer") or DEFAULT_SHUFFLE_BUFFER
    train = splits.train.shuffle(shuffle_buffer, seed=cfg.seed).batch(global_batch)
    probe = nested.to_numpy(next(iter(splits.test.batch(cfg.verify.probe_size)))[0])
    test = splits.test.batch(global_batch)
    if cfg.speed.prefetch:
        train, test = train.prefetch(tf.data.AUTOTUNE), test.prefetch(tf.data.AUTOTUNE)
    return Data(train=train, test=test, probe=probe, n_train=splits.n_train,
                n_test=splits.n_test, ordered=splits.ordered)


@dataclass
class Splits:
    """The data prepared once per process: the training split cached, unbatched."""

    train: tf.data.Dataset  # preprocessed, cached (read whole once: check_complete or a fit)
    test: tf.data.Dataset  # preprocessed
    ordered: tf.data.Dataset  # the training split unbatched, in its stored order
    n_train: int
    n_test: int


_prepared: dict[str, Splits] = {}


def prepared(cfg: Config) -> Splits:
    """The job's splits, read and preprocessed once per process for the same data, seed and
    map options."""
    from omegaconf import OmegaConf

    key = repr((OmegaConf.to_container(cfg.data, resolve=True), cfg.seed,
                bool(cfg.speed.parallel_map)))
    if key not in _prepared:
        _prepared[key] = _prepare(cfg)
    return _prepared[key]


def _prepare(cfg: Config) -> Splits:
    own = targets.is_target(cfg.data)
    if own:
        train, test = user_splits(cfg.data)
    elif cfg.data.name == "digits":
        train, test = _digits(cfg.data.test_fraction, cfg.seed)
    elif cfg.data.name == "synthetic":
        train, test = _synthetic(cfg.data.n_train, cfg.data.n_test, cfg.seed)
    else:
        train, test = _tfds(cfg.data)
    n_train, n_test = _size(train, "train", cfg), _size(test, "test", cfg)
    # The user's data comes preprocessed; the built-in data gets the seed's `scale`.
    prepare = (lambda x, y: (x, y)) if own else scale
    calls = tf.data.AUTOTUNE if cfg.speed.parallel_map else None  # order stays deterministic
    ordered = train.map(prepare)  # not from the cache: a partial read would leave it unfinished
    train = train.map(prepare, num_parallel_calls=calls).cache()
    test = test.map(prepare, num_parallel_calls=calls)
    if "data_dir" in cfg.data:  # TFDS: data=mnist, data=tfds
        check_complete({"train": train, "test": test}, cfg.data.data_dir, cfg.data.name)
    return Splits(train=train, test=test, ordered=ordered, n_train=n_train, n_test=n_test)


DEFAULT_SHUFFLE_BUFFER = 10000  # a data option of the user's that sets no shuffle_buffer


def user_splits(options: Any) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The user's `data._target_` called with the keys beside it: (train, test), each a
    tf.data.Dataset of unbatched (inputs, labels) or a NumPy (x, y) pair; or a dict of them
    under "train" and "test"."""
    from hydra.utils import instantiate  # the job process only
    from omegaconf import OmegaConf

    arguments = targets.arguments(OmegaConf.to_container(options, resolve=True), "data")
    target = arguments[targets.TARGET]
    splits = instantiate(arguments, _convert_="all")
    if isinstance(splits, dict) and {"train", "test"} <= splits.keys():
        splits = (splits["train"], splits["test"])
    if not isinstance(splits, (tuple, list)) or len(splits) != 2:
        raise DataUnavailableError(
            f"data._target_={target} returned a {type(splits).__name__}: expected (train, "
            "test), each a tf.data.Dataset of unbatched (inputs, labels) or a NumPy (x, y) pair")
    return (_dataset(splits[0], target, "train"), _dataset(splits[1], target, "test"))


def _dataset(split: Any, target: str, name: str) -> tf.data.Dataset:
    if isinstance(split, tf.data.Dataset):
        if not isinstance(split.element_spec, tuple) or len(split.element_spec) != 2:
            raise DataUnavailableError(
                f"data._target_={target}: its {name} split yields {split.element_spec}: "
                "expected unbatched (inputs, labels) pairs")
        return split
    if isinstance(split, (tuple, list)) and len(split) == 2:
        return tf.data.Dataset.from_tensor_slices(tuple(split))
    raise DataUnavailableError(
        f"data._target_={target}: its {name} split is a {type(split).__name__}: expected a "
        "tf.data.Dataset of unbatched (inputs, labels) or a NumPy (x, y) pair")


def _size(split: tf.data.Dataset, name: str, cfg: Config) -> int:
    """The split's examples; counted once where tf.data cannot tell (a generator, a filter)."""
    n = int(split.cardinality())
    if n == tf.data.INFINITE_CARDINALITY:
        raise DataUnavailableError(f"data={cfg.data.name}: the {name} split is infinite (a "
                                   ".repeat()?): expected a finite split")
    if n < 0:
        n = int(split.reduce(np.int64(0), lambda count, _: count + 1))
    return n


_TF_FUNCTION = re.compile(r"\{\{function_node [^}]*\}\}\s*")  # TF's prefix: no news to users


def check_complete(splits: dict[str, tf.data.Dataset], data_dir: str | None,
                   name: str = "mnist") -> None:
    """Read every example once, in the data phase: TFDS reads its files lazily, so a truncated
    or damaged file would otherwise fail in the middle of training, naming no file. The train
    split is read through its cache, which training then reuses: no example is read twice."""
    for split, dataset in splits.items():
        try:
            dataset.reduce(0, lambda n, _: n + 1)
        except tf.errors.OpError as e:
            reason = _TF_FUNCTION.sub("", first_line(e.message))
            raise DataUnavailableError(
                f"{name}'s {split} split in {data_dir or 'the default TFDS data_dir'} is "
                f"incomplete or damaged: {type(e).__name__}: {reason}. Prepare "
                "it again (see data=mnist in the README), or use data=digits.") from e


def scale(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The seed's preprocessing: uint8 pixels to float32 in [0, 1]; inputs of another type (a
    TFDS dataset's text or features) as they are."""
    if image.dtype != tf.uint8:
        return image, label
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


def _tfds(options: Any) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """tfds.load(options.name): its (inputs, label) pairs, from a prepared copy, else downloaded."""
    name, data_dir, download = options.name, options.data_dir, options.download
    where = data_dir or "the default TFDS data_dir (TFDS_DATA_DIR or ~/tensorflow_datasets)"
    try:
        try:  # a prepared copy needs no network
            train, test = _tfds_load(options, download=False)
        except Exception:
            if not download:
                raise
            # Offline, TFDS retries each download for minutes: fail within seconds instead.
            _check_reachable(MNIST_HOST)
            train, test = _tfds_load(options, download=True)
    except Exception as e:  # TFDS raises many types offline; all end in the same advice.
        raise DataUnavailableError(
            f"{'MNIST' if name == 'mnist' else name} could not be loaded from {where} "
            f"(download={download}): "
            f"{type(e).__name__}: {first_line(e)}. Without a network, TFDS cannot download "
            "it. Remedies: prepare it once on a machine with a network (python -c \"import "
            f"tensorflow_datasets as tfds; tfds.load('{name}', data_dir='DIR')\"), copy DIR "
            "here and run with data.data_dir=DIR data.download=false; or use the bundled "
            "offline data with data=digits."
        ) from e
    return train, test


def _tfds_load(options: Any, download: bool) -> list[tf.data.Dataset]:
    import tensorflow_datasets as tfds

    splits = [options.get("train_split", "train"), options.get("test_split", "test")]
    features = options.get("features")
    if not features:
        return tfds.load(options.name, split=splits, as_supervised=True,
                         data_dir=options.data_dir, download=download)
    x, y = features
    return [split.map(lambda example: (example[x], example[y]))
            for split in tfds.load(options.name, split=splits, data_dir=options.data_dir,
                                   download=download)]


MNIST_HOST = "storage.googleapis.com"  # where TFDS's builders (mnist's among them) download from


def _check_reachable(host: str, timeout: float = 10.0) -> None:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"cannot reach {host}:443 ({e})") from e
