"""MLflow: the store, every job's run and a sweep's parent run, what a run holds, the relay of a
running job's epochs and model, the compatibility matrix, and runner.sync's engine.

Run by the Hydra process (and the user commands); of it the job process imports only `handover`
(its side of the run, MLflow imported only to save the model) and `artifacts` (a load_from URI).
"""
