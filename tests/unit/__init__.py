"""Unit tests: the logic that needs no TensorFlow job, in-process and fast (`pytest tests/unit`)."""
