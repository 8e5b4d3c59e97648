"""The compatibility matrix of a sweep: train-side choices down, load-side choices across.

Built from one record per job, whether it comes from the jobs' result.json files (at the end of
a sweep) or from their MLflow runs (`python -m runner.report`), so both give the same table.
Each job's outcome is judged once (`judge`: its kind, its words, its label); the table's text,
the heatmap's colours and labels all read that. No MLflow here.
"""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

from runner.core import resume as resumes
from runner.core.files import MATRIX_FORMATS, matrix_file
from runner.core.result import DIMENSIONS, RELEASES, VARIANTS, Result
from runner.core.summary import resume_words
from runner.core.text import first_line

# Rows: how the model was saved (tf: the release it was saved with); columns: how it is loaded.
ROW_DIMS = ("tutorial_step", "load_from", "tf", "save_api", "train_variant", "keras", "strategy",
            "model", "data")
COL_DIMS = ("load_tf", "load_api", "load_variant", "load_keras", "load_strategy")
REASON_CHARS = 60
_PATH = re.compile(r"/[\w.\-/{}|]{3,}")


class Kind(IntEnum):
    """What a cell shows, as the heatmap colours it (COLOURS[kind])."""

    NONE = 0  # no job
    FAILED = 1
    MIXED = 2  # several jobs of different kinds in one cell
    DRIFTED = 3  # passed, but the resume check drifted or failed
    INFERENCE = 4  # passed, inference only
    PASSED = 5  # passed, resume exact (or not checked)


@dataclass(frozen=True)
class Outcome:
    """One job's outcome: its kind, its words in the table, its label in the heatmap."""

    kind: Kind
    text: str  # 'passed, resume drifted 9.1e-03 (new optimizer)', 'failed in load: OSError: …'
    label: str  # 'drifted\nnew optimizer', 'failed\nload'


Key = tuple[tuple[str, ...], tuple[str, ...]]


@dataclass
class Matrix:
    row_dims: list[str]
    col_dims: list[str]
    rows: list[tuple[str, ...]]
    cols: list[tuple[str, ...]]
    cells: dict[Key, str]
    # The MLflow runs of each cell's jobs (matrix.html links them).
    runs: dict[Key, list[str]] = field(default_factory=dict)
    # Each cell's jobs' outcomes, in job order.
    outcomes: dict[Key, list[Outcome]] = field(default_factory=dict)

    def cell(self, row: tuple[str, ...], col: tuple[str, ...]) -> str:
        return self.cells.get((row, col), "")

    def kind(self, row: tuple[str, ...], col: tuple[str, ...]) -> Kind:
        """The cell's colour: its jobs' kind, MIXED if they differ, NONE without a job."""
        kinds = {o.kind for o in self.outcomes.get((row, col), [])}
        if not kinds:
            return Kind.NONE
        return kinds.pop() if len(kinds) == 1 else Kind.MIXED

    def label(self, row: tuple[str, ...], col: tuple[str, ...]) -> str:
        """The cell's text in the heatmap: each outcome and its cause in a word or two."""
        return "\n".join(dict.fromkeys(o.label for o in self.outcomes.get((row, col), [])))


def record_from_result(result: Result | Mapping[str, Any]) -> dict[str, Any]:
    error = result.get("error") or {}
    return {**{d: result.get(d) for d in DIMENSIONS}, "status": result["status"],
            "phase": error.get("phase"), "type": error.get("type"),
            "message": error.get("message"), "resume": result.get("resume"),
            "restart": _restart(result.get("interruption")),
            "run_id": result.get("mlflow_run_id")}


def _restart(interruption: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not interruption:
        return None
    return {"outcome": interruption.get("outcome"), "cause": interruption.get("cause")}


def record_from_run(tags: Mapping[str, str], metrics: Mapping[str, float] | None = None,
                    run_id: str | None = None) -> dict[str, Any]:
    """The same record from a job's MLflow run: its tags (and the resume metric)."""
    resume = None
    if tags.get("resume"):
        resume = {"outcome": tags["resume"], "cause": tags.get("resume_cause"),
                  "reason": tags.get("resume_cause"),
                  "max_abs_diff": (metrics or {}).get("resume_max_abs_diff")}
    restart = ({"outcome": tags["restart"], "cause": tags.get("restart_cause")}
               if tags.get("restart") else None)
    return {**{d: tags.get(d) for d in DIMENSIONS}, "status": tags.get("status"),
            "phase": tags.get("error_phase"), "type": tags.get("error_type"),
            "message": tags.get("error_message"), "resume": resume, "restart": restart,
            "run_id": run_id}


def outcome(record: Mapping[str, Any]) -> str:
    """'passed, resume exact', 'passed, resume drifted 9.1e-03 (iterations reset)', 'passed,
    inference only', or 'failed in load: OSError: SavedModel file does not exist at…'."""
    return judge(record).text


def judge(record: Mapping[str, Any]) -> Outcome:
    """The job's outcome, read from its status and its resume check once (and for
    save_api=backup_and_restore, how the killed training came back: 'restart exact')."""
    restart = record.get("restart") or {}
    restarted = (f", restart {restart['outcome']}"
                 + (f" ({restart['cause']})" if restart.get("cause") else "")
                 if restart.get("outcome") else "")
    if record["status"] == "passed":
        resume = record.get("resume") or {}
        words = resume_words(resume)
        text = (f"passed, {words}" if words else "passed") + restarted
        cause = resume.get("cause") or "unknown"
        if resume.get("outcome") == resumes.DRIFTED:
            return Outcome(Kind.DRIFTED, text, f"drifted\n{cause}")
        if resume.get("outcome") == resumes.ERROR:
            return Outcome(Kind.DRIFTED, text, f"resume error\n{cause}")
        if resumes.inference_only(resume):
            return Outcome(Kind.INFERENCE, text, "inference\nonly")
        exact = resume.get("outcome") == resumes.EXACT
        return Outcome(Kind.PASSED, text, "exact" if exact else "passed")
    # Paths differ from job to job and say little here: the type and the words say why.
    words = _PATH.sub("…", " ".join(first_line(record.get("message") or "").split()))
    reason = f"{record.get('type')}: {words}"
    if len(reason) > REASON_CHARS:
        reason = reason[: REASON_CHARS - 1] + "…"
    return Outcome(Kind.FAILED, f"{record['status']} in {record.get('phase')}: {reason}",
                   f"{record['status']}\n{record.get('phase')}")


def build(records: Iterable[Mapping[str, Any]]) -> Matrix:
    """Only the dimensions the sweep varied become headers; several jobs in one cell are joined."""
    records = list(records)
    varied = [d for d in DIMENSIONS if len({_value(r, d) for r in records}) > 1]
    for load, train in (("load_keras", "keras"), ("load_tf", "tf")):
        if all(str(r.get(load)) == str(r.get(train)) for r in records):
            varied = [d for d in varied if d != load]  # it followed the training side: no news
    if "tutorial_step" in varied:  # a step names its APIs and strategies: they add no row
        varied = [d for d in varied if d == "tutorial_step" or not _follows(records, d)]
    if "load_api" in varied and _follows(records, "save_api", "load_api"):
        varied = [d for d in varied if d != "save_api"]  # save_api=auto: paired with load_api
    row_dims = [d for d in ROW_DIMS if d in varied]
    col_dims = [d for d in COL_DIMS if d in varied]
    if not col_dims and len(row_dims) > 1:  # a table, not one long column
        col_dims = [row_dims.pop()]
    rows: list[tuple[str, ...]] = []
    cols: list[tuple[str, ...]] = []
    cells: dict[Key, str] = {}
    runs: dict[Key, list[str]] = {}
    outcomes: dict[Key, list[Outcome]] = {}
    for r in records:
        row = tuple(_value(r, d) for d in row_dims)
        col = tuple(_value(r, d) for d in col_dims)
        rows += [row] if row not in rows else []
        cols += [col] if col not in cols else []
        judged = judge(r)
        outcomes.setdefault((row, col), []).append(judged)
        previous = cells.get((row, col))
        cells[(row, col)] = (judged.text if previous in (None, judged.text)
                             else f"{previous}; {judged.text}")
        if r.get("run_id"):
            runs.setdefault((row, col), []).append(r["run_id"])
    return Matrix(row_dims, col_dims, rows, cols, cells, runs, outcomes)


def _value(record: Mapping[str, Any], dim: str) -> str:
    """A dimension's value as the matrix shows it (a variant at its defaults: "default")."""
    value = record.get(dim)
    if value is None and dim in RELEASES:
        return "installed"
    return "default" if value is None and dim in VARIANTS else str(value)


def _follows(records: list[Mapping[str, Any]], dim: str, by: str = "tutorial_step") -> bool:
    """Whether `dim` has one value per value of `by` (a tutorial step, a load API)."""
    seen: dict[str, str] = {}
    return all(seen.setdefault(str(r.get(by)), str(r.get(dim))) == str(r.get(dim))
               for r in records)


def _header(m: Matrix) -> list[str]:
    corner = f"{' × '.join(m.row_dims) or '(all)'} ↓ / {' × '.join(m.col_dims) or '(all)'} →"
    return [corner, *(" · ".join(c) or "(all)" for c in m.cols)]


def _grid(m: Matrix) -> list[list[str]]:
    return [[" · ".join(r) or "(all)", *(m.cell(r, c) for c in m.cols)] for r in m.rows]


def to_markdown(m: Matrix) -> str:
    lines = ["| " + " | ".join(_header(m)) + " |", "|" + "---|" * (len(m.cols) + 1)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
              for row in _grid(m)]
    return "\n".join(lines) + "\n"


def to_csv(m: Matrix) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(_header(m))
    writer.writerows(_grid(m))
    return out.getvalue()


# Heatmap colours, by Kind: no job, failed, mixed, resume error or drift, inference only,
# passed/exact.
COLOURS = ["#eeeeee", "#d9534f", "#c7a0d9", "#f0ad4e", "#5bc0de", "#5cb85c"]


def heatmap(m: Matrix) -> Any:
    """Green passed (resume exact), amber passed but resume drifted, blue inference only, red
    failed; each cell labelled with its outcome and cause in a word or two."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    values = [[int(m.kind(r, c)) for c in m.cols] for r in m.rows]
    fig, ax = plt.subplots(figsize=(2.4 * len(m.cols) + 2.5, 0.6 * len(m.rows) + 1.8))
    ax.imshow(values, cmap=ListedColormap(COLOURS), vmin=0, vmax=len(COLOURS) - 1,
              aspect="auto")
    for i, r in enumerate(m.rows):
        for j, c in enumerate(m.cols):
            ax.text(j, i, m.label(r, c), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(m.cols)), [" · ".join(c) or "(all)" for c in m.cols], rotation=20)
    ax.set_yticks(range(len(m.rows)), [" · ".join(r) or "(all)" for r in m.rows])
    ax.set_xlabel(" × ".join(m.col_dims) or "(all)")
    ax.set_ylabel(" × ".join(m.row_dims) or "(all)")
    fig.tight_layout()
    plt.close(fig)
    return fig


def to_html(m: Matrix, href: Callable[[str], str] | None = None,
            compare: str | None = None, runs_list: str | None = None) -> str:
    """The matrix as an HTML table, each cell coloured like the heatmap and, given `href`
    (run id -> link), linking to its jobs' runs in the MLflow UI; given `compare` and
    `runs_list`, links to the UI's comparison of all of them and to the runs list of them
    above it."""
    def cell(r: tuple[str, ...], c: tuple[str, ...]) -> str:
        text = html.escape(m.cell(r, c))
        links = [f'<a href="{html.escape(href(run))}" target="_top">run</a>'
                 for run in m.runs.get((r, c), [])] if href else []
        colour = COLOURS[m.kind(r, c)]
        return (f'<td style="background:{colour}">{text}'
                f'{"<br>" + " ".join(links) if links else ""}</td>')

    head = "".join(f"<th>{html.escape(h)}</th>" for h in _header(m))
    body = "".join(
        f"<tr><th>{html.escape(' · '.join(r) or '(all)')}</th>"
        + "".join(cell(r, c) for c in m.cols) + "</tr>" for r in m.rows)
    return ("<!doctype html><meta charset=utf-8><title>Compatibility matrix</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
            "td,th{border:1px solid #999;padding:4px 8px;font-size:13px;vertical-align:top}"
            "</style>"
            + "".join(f'<p><a href="{html.escape(link)}" target="_top">{words}</a></p>'
                      for link, words in (
                          (runs_list, "These jobs in the runs list, by outcome"),
                          (compare, f"Compare these {sum(map(len, m.runs.values()))} runs "
                                    "side by side")) if link)
            + f"<table><tr>{head}</tr>{body}</table>\n")


def write(m: Matrix, directory: Path, href: Callable[[str], str] | None = None,
          compare: str | None = None, runs_list: str | None = None) -> dict[str, Path]:
    """matrix.md, matrix.csv, matrix.png and matrix.html in `directory`."""
    paths = {name: directory / matrix_file(name) for name in MATRIX_FORMATS}
    paths["md"].write_text(to_markdown(m))
    paths["csv"].write_text(to_csv(m))
    paths["html"].write_text(to_html(m, href, compare, runs_list))
    heatmap(m).savefig(paths["png"], dpi=120)
    return paths
