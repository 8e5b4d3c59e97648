"""Model families that save and load differently from the tutorial's CNN, each a `model=`
preset built on the `_target_` mechanism (conf/model/<family>.yaml) with the data it needs
(conf/data/...): so they are also examples of a user's model and data.

- text: strings in, a TextVectorization vocabulary (a lookup table) adapted on the training text;
- mobilenet_v2: keras.applications.MobileNetV2, depthwise convolutions, many BatchNormalization;
- transformer: MultiHeadAttention, LayerNormalization, a registered positional embedding;
- stateful_custom: a registered layer with a non-trainable state it updates in `call`, holding
  a nested model (tensorflow/tensorflow#62483).

Each builder and data function takes `seed` and makes everything from it, offline.
"""
