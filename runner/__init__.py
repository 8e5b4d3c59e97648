"""runner: train under one tf.distribute strategy, save with one API, load with another, verify."""

from pathlib import Path

# The embedded MLflow store, absolute whatever the working directory: <repository>/outputs/mlflow.
DEFAULT_STORE_DIR = Path(__file__).resolve().parents[1] / "outputs" / "mlflow"
