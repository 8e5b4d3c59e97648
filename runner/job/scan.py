"""Every file of a saved model read for what could run code on load, before any load API opens
it (runner.core.trust judges what is found): the Keras configs in .keras archives, .h5 files and
a tf_keras SavedModel's keras_metadata.pb, and every function of a SavedModel's graph."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

from runner.core import trust
from runner.core.trust import Finding

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def scan(path: Path) -> list[Finding]:
    """What in the model at `path` (a file, or a SavedModel or checkpoint directory) could run
    code it carries."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    findings: list[Finding] = []
    for file in files:
        where = str(file.relative_to(path.parent))
        if file.suffix == ".keras" and zipfile.is_zipfile(file):
            with zipfile.ZipFile(file) as archive:
                if "config.json" in archive.namelist():
                    config = json.loads(archive.read("config.json"))
                    findings += trust.python_in_config(config, f"{where}: config.json")
        elif is_hdf5(file):
            findings += _hdf5_configs(file, where)
        elif file.name == "keras_metadata.pb":
            for config in _json_in_protobuf(file.read_bytes()):
                findings += trust.python_in_config(config, where)
        elif file.name in ("saved_model.pb", "saved_model.pbtxt"):
            findings += _saved_model(file, where)
    return findings


def keras_configs(path: Path) -> Iterator[object]:
    """The Keras model configs the model at `path` keeps (.keras config.json, an .h5 file's
    model_config, a tf_keras SavedModel's keras_metadata.pb)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("keras_metadata.pb"))
    for file in files:
        if file.suffix == ".keras" and zipfile.is_zipfile(file):
            with zipfile.ZipFile(file) as archive:
                if "config.json" in archive.namelist():
                    yield json.loads(archive.read("config.json"))
        elif file.name == "keras_metadata.pb":
            yield from _json_in_protobuf(file.read_bytes())
        elif is_hdf5(file):
            import h5py

            with h5py.File(file, "r") as h5:
                raw = h5.attrs.get("model_config")
                if raw is not None:
                    yield json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))


# The packages whose classes Keras finds without registration.
KERAS_PACKAGES = ("keras", "tf_keras")


def custom_classes(config: object) -> list[tuple[str, str | None]]:
    """The classes of a Keras config that are no Keras class: (the name load_model looks up,
    their module where the config says)."""
    found: list[tuple[str, str | None]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            name, module = node.get("class_name"), node.get("module")
            registered = node.get("registered_name")
            custom = (isinstance(module, str) and module.split(".")[0] not in KERAS_PACKAGES
                      or isinstance(registered, str) and ">" in registered
                      or isinstance(name, str) and ">" in name)
            if isinstance(name, str) and custom:
                key = (registered if isinstance(registered, str) else name, module)
                if key not in found:
                    found.append(key)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def native_format(location: Path) -> str | None:
    """The format of a model saved outside the runner: "keras", "h5" or "saved_model"."""
    if location.is_file() and location.suffix in (".keras", ".h5"):
        return location.suffix[1:]
    if location.is_dir() and any((location / n).is_file()
                                 for n in ("saved_model.pb", "saved_model.pbtxt")):
        return "saved_model"
    return None


def written_by(path: Path) -> str | None:
    """The Keras generation that wrote a model saved outside the runner, from its own files:
    "v3" (Keras 3) or "legacy" (tf_keras); None where they do not say (a SavedModel written by
    tf.saved_model.save or Keras 3's export)."""
    version: str | None = None
    if path.is_file() and path.suffix == ".keras" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if "metadata.json" in archive.namelist():
                version = json.loads(archive.read("metadata.json")).get("keras_version")
    elif path.is_file() and is_hdf5(path):
        import h5py

        with h5py.File(path, "r") as h5:
            raw = h5.attrs.get("keras_version")
            version = raw.decode() if isinstance(raw, bytes) else raw
    elif path.is_dir() and (path / "keras_metadata.pb").is_file():
        return "legacy"  # only tf_keras' Model.save writes Keras metadata into a SavedModel
    if not isinstance(version, str) or not version[:1].isdigit():
        return None
    return "v3" if int(version.split(".")[0]) >= 3 else "legacy"


def is_hdf5(file: Path) -> bool:
    with open(file, "rb") as f:
        return f.read(8) == HDF5_SIGNATURE


def _hdf5_configs(file: Path, where: str) -> Iterator[Finding]:
    """The model and training configs a Keras .h5 file keeps as attributes (a weights file has
    none)."""
    import h5py

    with h5py.File(file, "r") as h5:
        for key in ("model_config", "training_config"):
            raw = h5.attrs.get(key)
            if raw is not None:
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
                yield from trust.python_in_config(json.loads(text), f"{where}: {key}")


def _saved_model(file: Path, where: str) -> list[Finding]:
    """Every function of every meta graph against runner.core.trust's allow-list; the Keras
    metadata an older SavedModel keeps in its object graph, too."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    if file.suffix == ".pbtxt":
        text_format.Parse(file.read_text(), saved)
    else:
        saved.ParseFromString(file.read_bytes())
    findings: list[Finding] = []
    for graph in saved.meta_graphs:
        library = {f.signature.name: f for f in graph.graph_def.library.function}
        functions = {"": [n.op for n in graph.graph_def.node],
                     **{name: [n.op for n in f.node_def] for name, f in library.items()}}
        nodes = {n.name: n for n in graph.graph_def.node}
        saver_roots = [graph.saver_def.save_tensor_name, graph.saver_def.restore_op_name]
        saver = _called({fn for root in saver_roots if root
                         for fn in functions_called(nodes.get(root.split(":")[0]))}, library)
        findings += trust.ops_outside(functions, saver, where)
        for node in graph.object_graph_def.nodes:
            metadata = node.user_object.metadata if node.HasField("user_object") else ""
            if metadata.startswith("{"):
                findings += trust.python_in_config(json.loads(metadata), f"{where}: metadata")
    return findings


def functions_called(node: object) -> list[str]:
    """The functions a graph's (or a function's) node calls through its attributes."""
    if node is None:
        return []
    return [name for a in node.attr.values()
            for name in ([a.func.name] if a.HasField("func") else [])
            + [f.name for f in a.list.func]]


def _called(roots: set[str], library: dict) -> set[str]:
    """`roots` and every function they call, transitively."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen or name not in library:
            continue
        seen.add(name)
        for node in library[name].node_def:
            stack += functions_called(node)
    return seen


def _json_in_protobuf(data: bytes, depth: int = 0) -> Iterator[object]:
    """The JSON objects among a protobuf message's string fields, at any depth (a tf_keras
    keras_metadata.pb: one JSON config per layer), read off the wire format without its schema,
    which lives in tf_keras."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        wire = key & 7
        if wire == 0:
            _, i = _varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            size, i = _varint(data, i)
            chunk, i = data[i:i + size], i + size
            if chunk[:1] == b"{":
                try:
                    yield json.loads(chunk)
                    continue
                except ValueError:
                    pass
            if depth < 4:
                try:
                    yield from list(_json_in_protobuf(chunk, depth + 1))
                except ValueError:  # not a message: a plain string or bytes
                    pass
        else:
            raise ValueError(f"not a protobuf message (wire type {wire})")


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data):
            raise ValueError("a protobuf varint ran past the end")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
