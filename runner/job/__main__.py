"""`python -m runner.job CONFIG --output-dir DIR [--side S]`: runner.job.main in a new process."""

import os
import sys

from runner.job.main import main

if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # result.json is complete; skip TensorFlow's slow interpreter teardown (about 1.5 s a job).
    os._exit(code)
