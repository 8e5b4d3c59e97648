"""The job process: `python -m runner.job` (forked by the fork server, or new), one per job or
per side of a job. It prepares TensorFlow's runtime for its Keras generation and devices
(`runtime`, before TensorFlow is imported), then runs the scenario (`scenario`): train
(`training`), save (`saving`, into `artifact`'s saved_model/ folder), load (`loading`), verify
(`verify`, `accuracy`), the resume check (`resume`), continue, resave (`resave`), on the
models and data of `models` and `data` (the built-in ones or the user's `_target_`); a model
saved outside the runner gets its reference from `native`; trees of inputs and outputs are
handled by `nested`. The save APIs that are Keras callbacks during fit live in `callbacks`,
BackupAndRestore's kill and restart in `interruption`, the model families in `families`.
"""
