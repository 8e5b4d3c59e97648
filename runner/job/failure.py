"""How a job process records a failure in its result: the real exception, the phase it
happened in, a hint, the release it ran in, and the traceback beside result.json."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from runner.core import hints, redact
from runner.core import result as results
from runner.core.files import TRACEBACK
from runner.core.result import Result


def record(result: Result, e: BaseException, out: Path, cfg: Any, side: str) -> None:
    """Mark `result` failed (or interrupted) by `e` in its current phase; traceback.txt in
    `out`."""
    phase = result.get("phase", "train")
    results.set_error(result, e, phase, getattr(e, "hint", None)
                      or hints.release_hint(result, e, phase) or hints.hint_for(e, phase))
    result["error"]["release"] = release_of(cfg, side)
    (out / TRACEBACK).write_text(redact.text("".join(traceback.format_exception(e))))


def release_of(cfg: Any, side: str) -> str | None:
    """'tf=v2.15: tensorflow 2.15.1, tf-keras 2.15.1' where this side runs in another
    release's environment; None in the installed one."""
    key, generation = (("load_tf", cfg.load_keras.name) if side == "load"
                       else ("tf", cfg.keras.name))
    name = results.release(cfg, key)
    if name is None:
        return None
    found = results.versions()
    keras = "tf-keras" if generation == "legacy" else "keras"
    return f"{key}={name}: tensorflow {found['tensorflow']}, {keras} {found[keras]}"
