"""runner: train under one tf.distribute strategy, save with one API, load with another, verify.

The package is laid out by the process that runs its code:

- `runner.core`: what every process shares; no TensorFlow, no MLflow at import.
- `runner.tracking`: MLflow: the store, runs, what a job's run holds, the matrix.
- `runner.job`: the job process (`python -m runner.job`): TensorFlow, the scenario's steps.
- `runner.launcher`: the Hydra process: the task, its job processes, sweeps.
- `runner.__main__`, `runner.sync`, `runner.report`: the user's commands.

Each layer imports only from the layers listed above it (tests/unit/test_layout.py).
"""
