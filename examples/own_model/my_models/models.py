"""Models built with tf.keras, so that both Keras generations (keras=v3, keras=legacy) use them."""

import tensorflow as tf


# Registered: load_model finds it by "my_models>Scale" once this module is imported.
@tf.keras.utils.register_keras_serializable(package="my_models")
class Scale(tf.keras.layers.Layer):
    """Multiplies each input feature by a learned scale: a custom layer with a weight."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(int(input_shape[-1]),),
                                     initializer="ones", trainable=True)
        super().build(input_shape)

    def call(self, inputs):
        return inputs * self.scale


def build_classifier(features: int = 16, units: int = 32, classes: int = 4) -> tf.keras.Model:
    """A functional classifier: Scale, a hidden Dense, class logits."""
    inputs = tf.keras.Input((features,), name="features")
    x = Scale(name="scale")(inputs)
    x = tf.keras.layers.Dense(units, activation="relu", name="hidden")(x)
    outputs = tf.keras.layers.Dense(classes, name="logits")(x)
    return tf.keras.Model(inputs, outputs, name="classifier")


def build_compiled_classifier(features: int = 16, units: int = 32, classes: int = 4,
                              learning_rate: float = 0.01) -> tf.keras.Model:
    """The same, compiled by its builder: the runner keeps this compile."""
    model = build_classifier(features, units, classes)
    model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate, momentum=0.9),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


@tf.keras.utils.register_keras_serializable(package="my_models")
class Classifier(tf.keras.Model):
    """The same network as a Model subclass."""

    def __init__(self, units: int = 32, classes: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.units, self.classes = units, classes
        self.scale = Scale()
        self.hidden = tf.keras.layers.Dense(units, activation="relu")
        self.out = tf.keras.layers.Dense(classes)

    def call(self, inputs, training=None):
        return self.out(self.hidden(self.scale(inputs)))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "classes": self.classes}


class Shift(tf.keras.layers.Layer):
    """A custom layer nobody registered: load_model cannot find it by name."""

    def build(self, input_shape):
        self.shift = self.add_weight(name="shift", shape=(int(input_shape[-1]),),
                                     initializer="zeros", trainable=True)
        super().build(input_shape)

    def call(self, inputs):
        return inputs + self.shift


def build_unregistered(features: int = 16, classes: int = 4) -> tf.keras.Model:
    inputs = tf.keras.Input((features,))
    outputs = tf.keras.layers.Dense(classes)(Shift()(inputs))
    return tf.keras.Model(inputs, outputs)


def build_two_headed(features: int = 16, extra: int = 4, classes: int = 4) -> tf.keras.Model:
    """Two named inputs, two named outputs (class logits and a score), compiled by its builder:
    a loss per output."""
    inputs = {"features": tf.keras.Input((features,), name="features"),
              "extra": tf.keras.Input((extra,), name="extra")}
    x = tf.keras.layers.Concatenate()([Scale(name="scale")(inputs["features"]), inputs["extra"]])
    x = tf.keras.layers.Dense(32, activation="relu", name="hidden")(x)
    outputs = {"class": tf.keras.layers.Dense(classes, name="class")(x),
               "score": tf.keras.layers.Dense(1, name="score")(x)}
    model = tf.keras.Model(inputs, outputs, name="two_headed")
    model.compile(optimizer="adam",
                  loss={"class": tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        "score": tf.keras.losses.MeanSquaredError()})
    return model
