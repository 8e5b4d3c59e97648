"""A library set's environment: made once with uv into a per-user cache, from the set's lock
file (exact versions and hashes), under a lock so that parallel jobs, SLURM tasks and other
runners asking at the same moment build it once; reused offline afterwards.

Measured (2026-12, 2 cores, Python 3.11): 8-12 s per environment from uv's cache warm with the
wheels, 16-26 s from an empty one; uv hard-links from its cache, so a further environment costs
about 20 MB of disk (each is 1.9-2.0 GB otherwise).

An environment is complete when its READY file exists, written last; it is built in a
`.partial-` folder renamed into place, so that a build that fails or is killed leaves nothing
that looks usable (the next build removes the leftover under the lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from runner.core.releases import LibrarySet, parse, python_minor

ENVS_DIR_ENV = "RUNNER_ENVS_DIR"  # the cache's folder, e.g. on a cluster's shared filesystem
READY = "runner-env.json"  # written last: what the environment holds, and that it is complete
LOCKS = Path(__file__).parent / "locks"  # the repository's lock files, one per set and platform
# The packages results name, in the order they are shown.
SHOWN = ("tensorflow", "keras", "tf-keras", "tensorflow-hub")


class BuildError(RuntimeError):
    """An environment could not be built (the index unreachable, a set that does not resolve)."""


def root(directory: str | os.PathLike[str] | None = None) -> Path:
    """The cache's folder: `directory`, else $RUNNER_ENVS_DIR, else ~/.cache/runner/envs."""
    chosen = directory or os.environ.get(ENVS_DIR_ENV)
    if chosen:
        return Path(chosen).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "runner" / "envs"


def platform_tag() -> str:
    """What a lock file is valid for: the Python minor and the platform (py3.11-linux-x86_64)."""
    return f"py{python_minor()}-{sys.platform}-{platform.machine()}"


def lock_name(found: LibrarySet) -> str:
    return f"{found.name}-{platform_tag()}.txt"


def repository_lock(found: LibrarySet) -> Path:
    return LOCKS / lock_name(found)


def uv() -> str:
    """The uv executable (the `uv` package, a dependency of the runner)."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if not found:
            raise BuildError("uv not found: pip install uv (a dependency of the runner "
                                    "that builds environments of other releases)") from None
        return found


def pins(lock_text: str) -> dict[str, str]:
    """name -> version of every `name==version` line of a lock file."""
    return {m.group(1).lower(): m.group(2)
            for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", lock_text, re.MULTILINE)}


def shown(versions: dict[str, str]) -> str:
    """'tensorflow 2.16.2, keras 3.15.1, ...' (SHOWN's packages)."""
    return ", ".join(f"{d} {versions[d]}" for d in SHOWN if d in versions)


def compile_lock(found: LibrarySet, output: Path) -> None:
    """Resolve the set with uv into a lock file with hashes (`output`), for this Python and
    platform."""
    output.parent.mkdir(parents=True, exist_ok=True)
    requirements = output.with_suffix(".in")
    requirements.write_text("\n".join(found.requirements()) + "\n")
    temporary = output.with_name(f".{output.name}.{os.getpid()}")
    try:
        _uv(["pip", "compile", "--quiet", "--generate-hashes", "--python-version",
             python_minor(), "--no-header", requirements.name, "-o", temporary.name],
            f"resolving {found.name}", cwd=output.parent)  # no folder in its `via` lines
        header = (f"# {found.name} for {platform_tag()}: {' '.join(found.requirements())}\n"
                  f"# python -m runner.envs lock {found.name}  (uv pip compile --generate-hashes)"
                  "\n")
        output.write_text(header + temporary.read_text())
    finally:
        temporary.unlink(missing_ok=True)
        requirements.unlink(missing_ok=True)


def lock_text(found: LibrarySet, cache: Path) -> tuple[str, bool]:
    """The set's lock file's text, and whether it is the repository's (else resolved today into
    the cache, once: a set or platform the repository does not lock)."""
    kept = repository_lock(found)
    if kept.is_file():
        return kept.read_text(), True
    resolved = cache / "locks" / lock_name(found)
    if not resolved.is_file():
        with locked(cache / "locks" / f".{resolved.name}.lock"):
            if not resolved.is_file():
                compile_lock(found, resolved)
    return resolved.read_text(), False


# How an environment is built, in its key with the lock file: a recipe that changes (as when
# --compile-bytecode came in) makes new environments, not a mix of old and new ones.
RECIPE = "uv venv --relocatable; uv pip sync --require-hashes --compile-bytecode"


def key(found: LibrarySet, text: str) -> str:
    """The environment's folder name: the set, the platform, and the hash of its lock file and
    RECIPE (a lock file that changes makes a new environment, never a changed one)."""
    digest = hashlib.sha256(f"{RECIPE}\n{text}".encode()).hexdigest()[:10]
    return f"{found.name}-{platform_tag()}-{digest}"


def python_of(directory: Path) -> Path:
    return directory / "bin" / "python"


def ready(directory: Path) -> dict[str, Any] | None:
    """The environment's READY record, if it is complete."""
    try:
        return json.loads((directory / READY).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def locked(path: Path, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """An exclusive lock (flock) on `path`; `waiting` is called once if another holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                waiting()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def say(line: str) -> None:
    """A build's progress line, at once (the runner's output may be a pipe)."""
    print(line, flush=True)


def ensure(found: LibrarySet, directory: str | os.PathLike[str] | None = None,
           say: Callable[[str], None] = say) -> Path:
    """The set's environment's Python, built first if it is not complete yet."""
    cache = root(directory)
    text, kept = lock_text(found, cache)
    target = cache / key(found, text)
    if ready(target):
        return python_of(target)
    with locked(cache / f".{target.name}.lock",
                lambda: say(f"environment {found.name}: waiting for another process building "
                            f"it in {target}")):
        if not ready(target):
            build(found, text, kept, target, say)
    return python_of(target)


def build(found: LibrarySet, text: str, kept: bool, target: Path,
          say: Callable[[str], None]) -> None:
    """Build the environment into `target` (the caller holds its lock)."""
    for leftover in target.parent.glob(f".{target.name}.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)  # a build killed earlier
    versions = pins(text)
    say(f"environment {found.name} ({shown(versions)}): building in {target} with uv, once"
        + ("" if kept else "; not locked in the repository: resolved today"))
    started = time.monotonic()
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    lock_file = partial.with_suffix(".txt")
    try:
        lock_file.write_text(text)
        _uv(["venv", "--quiet", "--relocatable", "--python", base_python(), str(partial)],
            f"building {found.name}")
        # --compile-bytecode: pip's habit, not uv's; without .pyc files (and with
        # PYTHONDONTWRITEBYTECODE set) every import of TensorFlow compiled its source anew:
        # measured 10.3 s against 5.5 s.
        _uv(["pip", "sync", "--quiet", "--require-hashes", "--compile-bytecode", "--python",
             str(python_of(partial)), str(lock_file)], f"building {found.name}")
        record = {"set": found.name, "tensorflow": found.tensorflow, "keras_version": found.keras,
                  "platform": platform_tag(), "lock": "repository" if kept else "resolved",
                  "versions": versions, "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "build_s": round(time.monotonic() - started, 1)}
        (partial / READY).write_text(json.dumps(record, indent=1) + "\n")
        if target.exists():  # an incomplete one (READY missing): a build interrupted by hand
            shutil.rmtree(target)
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        lock_file.unlink(missing_ok=True)
    say(f"environment {found.name}: built in {time.monotonic() - started:.0f} s")


def base_python() -> str:
    """The interpreter the environments are made from: this one's base (same Python minor, so
    that the runner's code runs in both)."""
    return getattr(sys, "_base_executable", None) or sys.executable


NETWORK = re.compile(r"(?i)(connect|dns|timed? ?out|network|unreachable|resolve host|"
                     r"failed to fetch|error sending request)")


def _uv(args: list[str], doing: str, cwd: Path | None = None) -> None:
    """Run uv; a failure raises BuildError with uv's own words."""
    process = subprocess.run([uv(), *args], capture_output=True, text=True, cwd=cwd)
    if process.returncode == 0:
        return
    said = "\n".join(line for line in process.stderr.strip().splitlines()[-12:] if line.strip())
    why = ("the package index could not be reached (uv reads UV_INDEX_URL, UV_DEFAULT_INDEX "
           "and uv.toml for another index)" if NETWORK.search(said) else "uv failed")
    raise BuildError(f"{doing}: {why}; nothing was left behind. uv said:\n{said}")


def built(directory: str | os.PathLike[str] | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """The complete environments in the cache, with their READY records."""
    cache = root(directory)
    found = []
    for path in sorted(cache.glob("tf*")) if cache.is_dir() else []:
        record = ready(path)
        if record:
            found.append((path, record))
    return found


def stale(path: Path, record: dict[str, Any]) -> bool:
    """Whether a built environment's set is locked in the repository now with other pins (or
    built by another RECIPE): jobs no longer use it (python -m runner.envs remove SET removes it
    with the current one)."""
    try:
        found = parse(record["set"])
    except (KeyError, ValueError):
        return False
    kept = repository_lock(found)
    return kept.is_file() and path.name != key(found, kept.read_text())


def remove(found: LibrarySet, directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the set's environments (every lock file's), each under its lock."""
    removed = []
    for path, record in built(directory):
        if record.get("set") == found.name:
            with locked(path.with_name(f".{path.name}.lock")):
                (path / READY).unlink(missing_ok=True)  # incomplete from here on
                shutil.rmtree(path)
            removed.append(path)
    return removed


def code_path() -> Path:
    """A folder holding only the runner's package (a link to it), for another environment's
    PYTHONPATH: the folder above the package may be a site-packages holding this environment's
    TensorFlow, which must not shadow the other's."""
    package = Path(__file__).resolve().parents[1]
    shim = root() / ".code" / hashlib.sha256(str(package).encode()).hexdigest()[:12]
    link = shim / "runner"
    if not (link.is_symlink() and link.resolve() == package):
        shim.mkdir(parents=True, exist_ok=True)
        temporary = shim / f".runner.{os.getpid()}"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(package, target_is_directory=True)
        os.replace(temporary, link)
    return shim
