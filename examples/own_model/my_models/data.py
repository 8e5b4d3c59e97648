"""The data: Gaussian blobs, one per class, as NumPy arrays or as tf.data datasets."""

import numpy as np
import tensorflow as tf


def blobs(n_train: int = 800, n_test: int = 200, features: int = 16, classes: int = 4,
          seed: int = 0):
    """(x_train, y_train), (x_test, y_test): float32 features, int64 class labels."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 2.0, size=(classes, features))

    def split(n):
        labels = rng.integers(0, classes, size=n)
        x = centers[labels] + rng.normal(0.0, 1.5, size=(n, features))
        return x.astype(np.float32), labels.astype(np.int64)

    return split(n_train), split(n_test)


def blobs_dataset(**kwargs):
    """The same splits as unbatched tf.data datasets of (features, label)."""
    train, test = blobs(**kwargs)
    return (tf.data.Dataset.from_tensor_slices(train), tf.data.Dataset.from_tensor_slices(test))


def blobs_two_headed(n_train: int = 800, n_test: int = 200, features: int = 16, extra: int = 4,
                     classes: int = 4, seed: int = 0):
    """Inputs {"features", "extra"}, labels {"class", "score"}, as tf.data datasets."""
    (x, y), (xt, yt) = blobs(n_train, n_test, features, classes, seed)
    rng = np.random.default_rng(seed + 1)

    def split(x, y):
        e = rng.normal(size=(len(x), extra)).astype(np.float32)
        score = (x.sum(axis=1, keepdims=True) / features + e[:, :1]).astype(np.float32)
        return tf.data.Dataset.from_tensor_slices(
            ({"features": x, "extra": e}, {"class": y, "score": score}))

    return split(x, y), split(xt, yt)
