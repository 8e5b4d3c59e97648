"""The TensorFlow/Keras releases a job side can run in (`tf`, `load_tf`): the library sets they
stand for, and the pairs that cannot run, refused before anything runs (Keras 3 on TensorFlow
2.15) with the reason.

A set names what a user upgrades between: tensorflow, keras, tf-keras and tensorflow-hub, plus
what the runner's job side imports (Hydra's instantiate, OmegaConf, scikit-learn's digits,
TFDS). Its exact versions come from its lock file (runner/launcher/locks), not from here:
`tensorflow==2.16.*` resolves Keras to the newest Keras 3 (3.15.1 in 2026-12), not the Keras 3.3
of 2.16's day, which is why `keras_version` exists. runner.launcher.environments builds them.
Nothing here imports beyond the standard library: config time (runner.core.validate checks a
job's or a sweep's combinations).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any

INSTALLED = "installed"
# The `tf` options: TensorFlow minors the package index serves for Python 3.11 (measured
# 2026-12: 2.12 to 2.21; the group starts at the last Keras 2 release).
RELEASES = ("2.15", "2.16", "2.17", "2.18", "2.19", "2.20", "2.21")
# Options that pin a Keras 3 release of their own: TensorFlow 2.16 with the Keras of its day
# (3.3.3), which a sweep can take as one value (tf=v2.16,v2.16-keras3.3.3).
PINNED_KERAS = ("v2.16-keras3.3.3",)
OPTION_PREFIX = "v"  # tf=v2.16: Hydra's grammar reads a bare 2.16 as a float, refused as a group
# The last TensorFlow whose tf.keras is Keras 2; from 2.16 on it is Keras 3.
LAST_KERAS_2 = "2.15"
# Python minors each release has wheels for (PyPI), where this decides a refusal.
NEWEST_PYTHON = {"2.15": "3.11"}
# The job side's own imports, at the versions this package runs with; setuptools: tensorflow-hub
# 0.16 imports pkg_resources (gone from setuptools 81), and uv's environments have none.
JOB_SIDE = ("hydra-core==1.3.*", "omegaconf==2.3.*", "scikit-learn", "tensorflow-datasets==4.9.*",
            "importlib_resources", "setuptools<81")
KERAS_VERSION = re.compile(r"^3\.\d+\.\d+$")


def python_minor() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def version_key(version: str) -> tuple[int, ...]:
    """'2.16' -> (2, 16); '3.15.1' -> (3, 15, 1): versions compared as numbers."""
    return tuple(int(p) for p in version.split(".") if p.isdigit())


@dataclass(frozen=True)
class LibrarySet:
    """TensorFlow `tensorflow` (a minor: "2.16") with its tf-keras, tensorflow-hub, and Keras
    `keras` (a Keras 3 release, "3.3.3"; None: what the index resolves for that TensorFlow)."""

    tensorflow: str
    keras: str | None = None

    @property
    def name(self) -> str:
        return f"tf{self.tensorflow}" + (f"-keras{self.keras}" if self.keras else "")

    @property
    def option(self) -> str:
        return f"{OPTION_PREFIX}{self.tensorflow}"

    @property
    def keras_2(self) -> bool:
        """Whether this TensorFlow's tf.keras is Keras 2 (no Keras 3 generation in it)."""
        return version_key(self.tensorflow) <= version_key(LAST_KERAS_2)

    def requirements(self) -> list[str]:
        if self.keras:
            keras = f"keras=={self.keras}"
        elif self.keras_2:
            keras = f"keras=={self.tensorflow}.*"
        else:
            keras = "keras>=3"
        return [f"tensorflow=={self.tensorflow}.*", f"tf-keras=={self.tensorflow}.*", keras,
                "tensorflow-hub==0.16.*", *JOB_SIDE]


def of_option(node: Any) -> LibrarySet | None:
    """The set a `tf` / `load_tf` config node stands for; None for `installed`."""
    if node is None or node.get("name") == INSTALLED or not node.get("tensorflow"):
        return None
    return LibrarySet(str(node.tensorflow), node.get("keras_version") or None)


def parse(text: str) -> LibrarySet:
    """A set as users name it: `v2.16`, `2.16`, `tf2.16`, `tf2.16-keras3.3.3`."""
    m = re.fullmatch(r"(?:tf|v)?(\d+\.\d+)(?:-keras(\S+))?", text.strip())
    if not m or m.group(1) not in RELEASES:
        raise ValueError(f"{text!r} is not a library set: one of "
                         f"{', '.join(OPTION_PREFIX + r for r in RELEASES)}, or tfX.Y-kerasZ "
                         "(e.g. tf2.16-keras3.3.3)")
    found = LibrarySet(m.group(1), m.group(2))
    why = problem(found)
    if why:
        raise ValueError(why)
    return found


def problem(found: LibrarySet | None, generation: str | None = None, key: str = "tf",
            python: str | None = None) -> str | None:
    """Why this set cannot run a side of Keras `generation` (v3, legacy); None if it can."""
    if found is None:
        return None
    python = python or python_minor()
    newest = NEWEST_PYTHON.get(found.tensorflow)
    if newest and version_key(python) > version_key(newest):
        return (f"{key}={found.option}: TensorFlow {found.tensorflow} has no wheel for Python "
                f"{python} (newest: {newest}); run the runner on Python {newest} or choose a "
                "newer release")
    if found.keras is not None and not KERAS_VERSION.fullmatch(found.keras):
        return (f"{key}.keras_version={found.keras}: a Keras 3 release (e.g. 3.3.3); Keras 2 is "
                "tf-keras, which the set pins to its TensorFlow's minor (keras=legacy)")
    if found.keras_2 and found.keras:
        return (f"{key}={found.option} with {key}.keras_version={found.keras}: TensorFlow "
                f"{found.tensorflow}'s tf.keras is Keras 2; Keras 3 needs TensorFlow 2.16 or "
                "newer")
    if found.keras_2 and generation == "v3":
        side = "load_keras" if key == "load_tf" else "keras"
        return (f"{side}=v3 with {key}={found.option}: TensorFlow {found.tensorflow} has no "
                f"Keras 3 (its tf.keras is Keras 2); use {side}=legacy, or {key}=v2.16 or newer")
    return None


SAME = "same"  # load_tf=same: the training side's release


def library_set(option: str | None, keras_version: str | None) -> LibrarySet | None:
    """The set of a `tf`/`load_tf` option name (v2.16, v2.16-keras3.3.3) and keras_version;
    None for installed."""
    if option in (None, INSTALLED):
        return None
    m = re.fullmatch(rf"{OPTION_PREFIX}(\d+\.\d+)(?:-keras(\S+))?", str(option))
    if m is None:
        raise ValueError(f"{option!r} is not a release option")
    return LibrarySet(m.group(1), keras_version or m.group(2))
