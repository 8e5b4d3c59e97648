"""What every process of the runner shares: the config's schema and checks, the save/load API
registry, the result contract, the output folder's names, hints, redaction, interrupts, the
console filter. Nothing here imports TensorFlow or MLflow: config errors must answer fast."""
