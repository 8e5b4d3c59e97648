"""`python -m runner.golden make [--out DIR]`: the golden corpus, small models saved by older
releases through the runner's own environments (tf=), kept in the repository with what wrote
them; tests/test_golden.py loads each with the installed release and checks its logits and,
where the path carries one, its optimizer state (the resume check). Keras keeps the same kind
of net for its own old files (keras-team/keras PR #22891's pre_pr22362_nested_container.keras).

Each entry is a runner job's saved_model/ folder (the model as its save API wrote it, the probe
logits, the resume reference, saved_with.json with every library version), and a config option
`conf/golden/<name>.yaml` that loads it: `python -m runner -m --config-dir DIR/conf
'+golden=glob(*)'` runs the whole corpus as one sweep.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from runner.core.files import RESULT, SAVED_MODEL, SAVED_WITH, tree_bytes

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "golden"
# A small model with what breaks across releases: a registered custom layer with a state
# variable it updates in call, holding a nested model (model=stateful_custom; a few KB a file).
MODEL = "stateful_custom"
# (tf option, Keras generation, the load APIs whose paired save APIs write the entries)
CORPUS = (
    ("v2.15", "legacy", ("keras", "saved_model", "checkpoint", "weights")),
    ("v2.16-keras3.3.3", "v3", ("keras", "saved_model", "checkpoint", "weights")),
    ("v2.19", "v3", ("keras", "weights")),
    ("v2.19", "legacy", ("keras", "weights")),
)
# The largest entry the corpus takes (the "a few hundred KB at most").
MAX_BYTES = 400_000


def make(out: Path) -> list[Path]:
    """Train and save every entry in its release's environment; replace `out`'s entries."""
    made = []
    for tf, keras, load_apis in CORPUS:
        with tempfile.TemporaryDirectory(prefix="runner-golden-") as temporary:
            sweep = Path(temporary) / "sweep"
            command = [sys.executable, "-m", "runner", "-m", f"hydra.sweep.dir={sweep}",
                       f"model={MODEL}", f"tf={tf}", f"keras={keras}",
                       f"load_api={','.join(load_apis)}", "train.epochs=1", "continue_epochs=0",
                       "verbose=0", "mlflow.enabled=false"]
            print(" ".join(command[1:]), flush=True)
            subprocess.run(command, cwd=ROOT, check=True)
            for job in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
                made.append(keep(job, out, tf, keras))
    write_readme(out, made)
    return made


def keep(job: Path, out: Path, tf: str, keras: str) -> Path:
    """The job's saved model as entry `<tf>-<keras>-<save_api>` and its config option."""
    result = json.loads((job / RESULT).read_text())
    if result["status"] != "passed":
        raise SystemExit(f"{job}: {result['status']}: {result.get('error')}")
    name = f"{tf}-{keras}-{result['save_api']}"
    entry = out / name
    shutil.rmtree(entry, ignore_errors=True)
    shutil.copytree(job / SAVED_MODEL, entry)
    size = tree_bytes(entry)
    if size > MAX_BYTES:
        raise SystemExit(f"{name}: {size} bytes, more than the corpus takes ({MAX_BYTES})")
    versions = result["versions"]
    dist = "tf-keras" if keras == "legacy" else "keras"
    option = out / "conf" / "golden" / f"{name}.yaml"
    option.parent.mkdir(parents=True, exist_ok=True)
    option.write_text(
        "# @package _global_\n"
        f"# Saved by tensorflow {versions['tensorflow']}, {dist} {versions[dist]} "
        f"(tf={tf} keras={keras}) with save_api={result['save_api']}; "
        "python -m runner.golden make\n"
        "defaults:\n"
        f"  - override /model: {MODEL}\n"  # its classes, its rebuild, its data
        f"  - override /load_api: {result['load_api']}\n"
        f"  - override /load_keras: {keras}\n\n"
        f"load_from: {where(entry)}\n")
    return entry


def where(entry: Path) -> str:
    """The entry as load_from names it: relative to the repository (whose folder the tests and
    users run from), else absolute."""
    entry = entry.resolve()
    return str(entry.relative_to(ROOT)) if entry.is_relative_to(ROOT) else str(entry)


def write_readme(out: Path, entries: list[Path]) -> None:
    lines = ["# The golden corpus", "",
             "Models saved by older releases (`python -m runner.golden make`), loaded by the "
             "installed one in `tests/test_golden.py`. Written by:", "",
             "| entry | save API | tensorflow | keras | tf-keras | bytes |",
             "|---|---|---|---|---|---|"]
    for entry in entries:
        saved = json.loads((entry / SAVED_WITH).read_text())
        v = saved["versions"]
        size = tree_bytes(entry)
        lines.append(f"| `{entry.name}` | {saved['save_api']} | {v.get('tensorflow')} | "
                     f"{v.get('keras')} | {v.get('tf-keras')} | {size:,} |")
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.golden", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("make", help="write the corpus (builds the environments)")
    command.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    for entry in make(args.out):
        print(entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
