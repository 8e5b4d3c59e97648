"""The user's own model and data: `_target_` configs, as Hydra's `instantiate` reads them.

A model or data option whose config has `_target_` names a function or class of the user's
package; the keys beside it are its arguments, except the runner's own (`RUNNER_KEYS`). Here,
without importing TensorFlow or the user's code, a target is checked to exist: its module is
found on the path the user's Python would search (the directory they run from, PYTHONPATH), and
its source is read, not run, for the name. Building happens in the job process
(runner.job.models, runner.job.data).
"""

from __future__ import annotations

import ast
import difflib
import importlib.machinery
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from runner.core.constraints import ConfigError

TARGET = "_target_"
# The keys of a target option that are the runner's, not arguments of the target.
RUNNER_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("name", "save_before_fit", "custom_objects"),
    "data": ("name", "shuffle_buffer"),
}
# Packages whose targets are not read from source: their names are made at import time
# (tensorflow.keras is a lazy attribute, not a module file).
LIBRARY_ROOTS = ("tensorflow", "keras", "tf_keras")
# What the option of `model=custom` / `data=custom` is named in results when it names no `name`.
PLACEHOLDER = "custom"


def is_target(node: Any) -> bool:
    """A config with `_target_` (given or still ??? : `in node` alone misses a missing value)."""
    return isinstance(node, Mapping) and TARGET in node.keys()


def arguments(node: Mapping[str, Any], group: str) -> dict[str, Any]:
    """The target's config without the runner's keys: what `instantiate` gets."""
    return {k: v for k, v in node.items() if k not in RUNNER_KEYS[group]}


def short_name(target: str) -> str:
    """my_pkg.models.build_classifier -> build_classifier."""
    return target.rsplit(".", 1)[-1]


def option_name(node: Mapping[str, Any], choice: str | None) -> str:
    """The name a target option is shown by: its `name`, else the option it was chosen as
    (model=my_model), else (model=custom) the target's short name."""
    if node.get("name"):
        return str(node["name"])
    if choice and choice != PLACEHOLDER:
        return choice
    return short_name(str(node[TARGET]))


def root(target: str) -> str:
    return target.split(".", 1)[0]


def check_target(target: Any, key: str) -> None:
    """`target` names something that exists, or ConfigError naming the key and what is there.
    The module is found, not imported: no user code (nor TensorFlow) runs at config time."""
    if not isinstance(target, str) or not target or any(not p.isidentifier()
                                                        for p in target.split(".")):
        raise ConfigError(f"{key}={target!r} is not a dotted Python name: expected e.g. "
                          "my_pkg.models.build (a function or class returning the object).")
    parts = target.split(".")
    found, depth = find_module(parts)
    if found is None:
        if sys.modules.get(parts[0]) is not None or parts[0] in sys.builtin_module_names:
            return
        raise ConfigError(
            f"{key}={target}: no module {parts[0]!r} on the path this job's Python searches "
            f"(the directory it runs from, {os.getcwd()}, and PYTHONPATH): run from the folder "
            "that holds your package, add it to PYTHONPATH, or install it.")
    if parts[0] in LIBRARY_ROOTS:
        return
    module = ".".join(parts[:depth])
    if depth == len(parts):
        if key.endswith(TARGET):  # a module is not something to call
            raise ConfigError(f"{key}={target} is a module: expected a function or class in "
                              "it.")
        return
    names = defined_names(found.origin)
    attribute = parts[depth]
    if names is not None and attribute not in names:
        close = difflib.get_close_matches(attribute, sorted(names), n=3)
        public = ", ".join(sorted(n for n in names if not n.startswith("_"))) or "nothing public"
        offer = (f"did you mean {', '.join(f'{module}.{c}' for c in close)}?" if close
                 else f"it defines {public}.")
        raise ConfigError(f"{key}={target}: module {module} ({found.origin}) defines no "
                          f"{attribute!r}; {offer}")


def find_module(parts: list[str]) -> tuple[importlib.machinery.ModuleSpec | None, int]:
    """The deepest module among the dotted `parts` on sys.path, found without importing
    anything, and how many parts it spans; (None, 0) when not even the first is found."""
    found = importlib.machinery.PathFinder.find_spec(parts[0], sys.path)
    if found is None:
        return None, 0
    depth = 1
    while depth < len(parts) and found.submodule_search_locations:
        sub = importlib.machinery.PathFinder.find_spec(
            ".".join(parts[:depth + 1]), list(found.submodule_search_locations))
        if sub is None:
            break
        found, depth = sub, depth + 1
    return found, depth


def defined_names(origin: str | None) -> set[str] | None:
    """The names a module's source binds at its top level; None where its source cannot tell
    (no source, a module __getattr__, a star import)."""
    if not origin or not origin.endswith(".py"):
        return None
    try:
        tree = ast.parse(Path(origin).read_text())
    except (OSError, SyntaxError, ValueError):
        return None  # the import reports it, with its own message
    names: set[str] = set()
    for node in _top_level(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return None if "__getattr__" in names else names


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements of the module body, into if/try blocks (conditional definitions count)."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, block, []):
                    yield from _top_level(child.body if isinstance(child, ast.ExceptHandler)
                                          else [child])


def custom_object_modules(node: Mapping[str, Any]) -> list[str]:
    """The modules a load side imports before loading a model of this option, so that the
    classes they register deserialize: the target's module and `custom_objects`' modules."""
    modules = []
    if is_target(node):
        modules.append(str(node[TARGET]).rsplit(".", 1)[0])
    objects = node.get("custom_objects") or []
    if isinstance(objects, Mapping):
        modules += [str(path).rsplit(".", 1)[0] for path in objects.values()]
    else:
        modules += [str(m) for m in objects]
    return list(dict.fromkeys(m for m in modules if m))


def check_custom_objects(objects: Any) -> None:
    """model.custom_objects: a list of modules, or {ClassName: dotted.path}."""
    if objects is None:
        return
    if isinstance(objects, Mapping):
        for name, target in objects.items():
            check_target(target, f"model.custom_objects.{name}")
        return
    if isinstance(objects, str) or not hasattr(objects, "__iter__"):
        raise ConfigError(f"model.custom_objects={objects!r}: expected a list of modules "
                          "([my_pkg.layers]) or {ClassName: my_pkg.layers.ClassName}.")
    for i, module in enumerate(objects):
        check_module(module, f"model.custom_objects[{i}]")


def check_module(module: Any, key: str) -> None:
    if not isinstance(module, str) or not all(p.isidentifier() for p in module.split(".")):
        raise ConfigError(f"{key}={module!r} is not a module name: expected e.g. my_pkg.layers.")
    parts = module.split(".")
    if find_module(parts)[1] != len(parts):
        raise ConfigError(f"{key}={module}: no such module on the path this job's Python "
                          f"searches (the directory it runs from, {os.getcwd()}, and PYTHONPATH).")


def compile_items(train: Any) -> list[tuple[str, Any]]:
    """train.optimizer, .loss and each of .metrics, with the key each is at (train.metrics[1]);
    metrics that are not a list come as one item at train.metrics."""
    items = [("train.optimizer", train.get("optimizer")), ("train.loss", train.get("loss"))]
    metrics = train.get("metrics")
    if isinstance(metrics, (str, Mapping)) or not hasattr(metrics, "__iter__"):
        return [*items, ("train.metrics", metrics)]
    return [*items, *((f"train.metrics[{i}]", m) for i, m in enumerate(metrics))]


def user_path(environ: dict[str, str] | None = None) -> None:
    """The directory the user runs from, first on the PYTHONPATH of every process the runner
    starts (fork servers, job processes, workers, SLURM tasks): their package is found as their
    own `python` finds it, wherever that process's working directory is."""
    env = os.environ if environ is None else environ
    cwd = os.getcwd()
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if cwd not in parts:
        env["PYTHONPATH"] = os.pathsep.join([cwd, *parts])
