"""The Hydra process: the task (`task`: checks, then the job's processes, then its report), the
job's processes started and watched (`job_process`, `supervise`, `local_cluster`, the fork server
in `fork_client`/`fork_server`/`fork_wire`), a tracked job's MLflow run (`tracked`), and a
sweep's bookends (`sweep`, `sweep_parent`, `slurm_watch`). No TensorFlow at import; MLflow only
in `tracked` and `sweep_parent`, which a job imports only when it is tracked.
"""
