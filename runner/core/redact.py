"""Secrets kept out of everything the runner writes: result.json, job.log, traceback.txt, the
saved configs, MLflow params, tags and artifacts.

A secret is the value of an environment variable named like one (MLFLOW_TRACKING_PASSWORD,
MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_TOKEN, anything with TOKEN, PASSWORD, SECRET or API_KEY
in its name), or the password part of a URL (`http://user:password@host`). Each becomes `***`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MASK = "***"
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|API_KEY|^MLFLOW_TRACKING_USERNAME$",
                         re.IGNORECASE)
# Values too short or too common to be told from ordinary text: masking them would mangle logs.
_NOT_SECRET = {"", "0", "1", "true", "false", "yes", "no", "none", "null"}
_MIN_LENGTH = 4
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^/\s:@]+:)[^/\s@]+@")


def environ() -> dict[str, str]:
    """A copy of os.environ taken without iterating it live. MLflow's telemetry thread deletes
    `_MLFLOW_TELEMETRY_SESSION_ID` from os.environ at any moment after a run is created;
    `dict(os.environ)`, `{**os.environ}` or `.items()` list the keys, then look each up, and
    raise KeyError when one went in between. `list(os.environ)` copies the keys atomically."""
    snapshot = {}
    for name in list(os.environ):
        value = os.environ.get(name)
        if value is not None:
            snapshot[name] = value
    return snapshot


def secrets(env: Mapping[str, str] | None = None) -> list[str]:
    """The secret values in `env` (default: the process's environment), longest first (so no
    secret is masked only in part)."""
    values = {value for name, value in (environ() if env is None else env).items()
              if SECRET_NAME.search(name) and len(value) >= _MIN_LENGTH
              and value.lower() not in _NOT_SECRET}
    return sorted(values, key=len, reverse=True)


def text(value: str, env: Mapping[str, str] | None = None) -> str:
    """`value` with every secret masked."""
    for secret in secrets(env):
        value = value.replace(secret, MASK)
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", value)


def tree(value: Any) -> Any:
    """A JSON-like structure with every string in it masked."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, Mapping):
        return {k: tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [tree(v) for v in value]
    return value


def file(path: Path) -> None:
    """Mask the secrets in a text file written by someone else (Hydra's saved configs)."""
    original = path.read_text()
    masked = text(original)
    if masked != original:
        path.write_text(masked)


class Stream:
    """Masks a byte stream chunk by chunk (a process's output, as it comes). What could be the
    start of a secret that the next chunk ends stays back until then: after the last line end,
    the last word (a URL with a password) and the length of the longest secret, less one."""

    HOLD_LIMIT = 65536  # a "word" longer than this is passed on anyway

    def __init__(self) -> None:
        self.patterns = [s.encode() for s in secrets()]
        self.keep = max((len(p) for p in self.patterns), default=1) - 1
        self.pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._mask(self.pending + chunk)
        cut = max(len(data) - self.keep, 0)
        word_start = max(data.rfind(sep) for sep in (b" ", b"\n", b"\r", b"\t")) + 1
        if len(data) - word_start <= self.HOLD_LIMIT:
            cut = min(cut, word_start)
        # Nothing before a line end is held: no secret spans lines, and a line shows at once.
        cut = max(cut, max(data.rfind(b"\n"), data.rfind(b"\r")) + 1)
        self.pending = data[cut:]
        return data[:cut]

    def flush(self) -> bytes:
        data, self.pending = self.pending, b""
        return data

    def _mask(self, data: bytes) -> bytes:
        for pattern in self.patterns:
            data = data.replace(pattern, MASK.encode())
        return _URL_PASSWORD_BYTES.sub(rb"\g<1>" + MASK.encode() + b"@", data)


_URL_PASSWORD_BYTES = re.compile(_URL_PASSWORD.pattern.encode())
