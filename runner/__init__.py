"""runner: train under one tf.distribute strategy, save with one API, load with another, verify."""
