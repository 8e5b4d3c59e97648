"""`model=mobilenet_v2`: keras.applications.MobileNetV2(weights=None, alpha=0.35) on
`data=colour_digits`: scikit-learn's digits at 32x32 in seeded colours."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

SIZE = 32  # MobileNetV2's smallest input


def colour_digits(test_fraction: float = 0.2,
                  seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The 1 797 real digits, 8x8 -> 32x32x3 float32 in [0, 1], each in a random tint."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    grey = tf.image.resize(digits.images[..., None] / 16.0, (SIZE, SIZE)).numpy()
    tint = rng.uniform(0.3, 1.0, size=(len(grey), 1, 1, 3))
    images = np.clip(grey * tint, 0.0, 1.0).astype(np.float32)
    order = rng.permutation(len(images))
    n_test = int(round(len(images) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    labels = digits.target.astype(np.int64)
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


def build(classes: int = 10, alpha: float = 0.35,
          batchnorm_momentum: float = 0.9) -> tf.keras.Model:
    """Logits (no softmax), for the seed's from_logits loss. Its BatchNormalization layers'
    momentum (0.999 in keras.applications) is lowered so that the moving statistics of a
    training of a few dozen steps settle: with 0.999 inference gave chance accuracy here."""
    model = tf.keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), alpha=alpha, weights=None, classes=classes,
        classifier_activation=None)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = batchnorm_momentum
    return model
