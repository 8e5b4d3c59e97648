"""Sweeps against a fresh embedded store: parent run, child runs, the compatibility matrix."""

from __future__ import annotations

import html
import json
import re
from urllib.parse import parse_qs

import pytest
from helpers.run import ROOT, runner, sweep_results
from mlflow.tracking import MlflowClient

from runner import report
from runner.core import summary
from runner.tracking import matrix

SWEEP = ["save_api=keras,export", "load_api=keras,saved_model", "verbose=0", "train.epochs=1",
         "continue_epochs=1", "mlflow.log_model=false"]


@pytest.mark.parametrize("launcher", [
    [],  # the basic launcher: jobs one after another
    # two at a time, one sqlite store (default run: test_faults' parallel and stopped sweeps)
    pytest.param(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], marks=pytest.mark.slow),
])
def test_sweep_has_a_parent_run_children_and_a_matrix(tmp_path, launcher, capsys):
    sweep_dir, store_dir = tmp_path / "sweep", tmp_path / "mlflow"
    proc = runner("-m", f"hydra.sweep.dir={sweep_dir}", f"mlflow.store_dir={store_dir}",
                  *launcher, *SWEEP)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = sweep_results(sweep_dir)
    assert len(results) == 4

    client = MlflowClient(f"sqlite:///{store_dir}/mlflow.db")
    experiment = client.get_experiment_by_name("runner-save-load")
    (parent,) = client.search_runs([experiment.experiment_id],
                                   filter_string="tags.`runner.sweep` = 'true'")
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 4
    # The sweep's outcome on the parent's row: counts, a summary, a status not all green.
    counts = {"jobs": 4, "passed": sum(r["status"] == "passed" for r in results)}
    counts["failed"] = 4 - counts["passed"]
    assert 0 < counts["failed"] < 4  # keras→saved_model and export→keras fail, by design
    resumes = [summary.outcome_code(r) for r in results if r["status"] == "passed"]
    counts |= {"resume_exact": resumes.count(3), "resume_drifted": resumes.count(2),
               "inference_only": resumes.count(1)}
    assert parent.data.metrics == {k: float(v) for k, v in counts.items()}
    assert parent.data.tags["summary"] == summary.sweep_words(counts)
    assert parent.data.tags["summary"].startswith(f"{counts['passed']}/4 passed")
    assert parent.info.status == "FAILED"
    assert parent.data.tags["status"] == f"finished: {counts['failed']} of 4 jobs failed"
    assert parent.data.tags["mlflow.note.content"].startswith(
        f"**{parent.data.tags['summary']}**")
    assert (sweep_dir / "matrix.md").read_text() in parent.data.tags["mlflow.note.content"]
    # The runs list the runner links to: filtered to exactly this sweep's jobs (MLflow's own
    # search with the link's filter), sorted by outcome, unfolded.
    link = re.search(r"this sweep's jobs in the runs list: .*?(#/experiments/\S+)",
                     proc.stdout).group(1)
    query = parse_qs(link.split("?", 1)[1])
    assert link.startswith(f"#/experiments/{experiment.experiment_id}/runs?")
    listed = client.search_runs([experiment.experiment_id],
                                filter_string=query["searchFilter"][0])
    assert {r.info.run_id for r in listed} == {r.info.run_id for r in children}
    assert query["orderByKey"] == ["metrics.`outcome`"]
    # Each job's outcome metric, for the compare page's plots.
    for child in children:
        result = next(r for r in results if r["output_dir"] == child.data.tags["output_dir"])
        assert child.data.metrics["outcome"] == summary.outcome_code(result)
        assert child.data.metrics["passed"] == (result["status"] == "passed")
    by_dir = {run.data.tags["output_dir"]: run for run in children}
    for result in results:
        run = by_dir[result["output_dir"]]  # every job recorded, complete
        assert run.data.tags["status"] == result["status"]
        assert run.info.status == ("FINISHED" if result["status"] == "passed" else "FAILED")
        assert "accuracy_after_train" in run.data.metrics
        # No job's config saw a tracking URI leaked into the environment by an earlier one.
        assert "mlflow.tracking_uri" not in run.data.params
        # Params the job used only: no cluster (one worker), no runner internals.
        assert not [k for k in run.data.params if k.startswith(("cluster.", "runner."))]
        assert "result.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # The runner's own entry as the source, also where a joblib worker (argv[0]: loky's) made it.
    for run in (parent, *children):
        assert run.data.tags["mlflow.source.name"] == str(ROOT / "runner" / "__main__.py")

    # The matrix: written, printed, logged to the parent, agreeing with the jobs.
    markdown = (sweep_dir / "matrix.md").read_text()
    assert markdown in proc.stdout
    assert (sweep_dir / "matrix.csv").exists() and (sweep_dir / "matrix.png").stat().st_size > 0
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "matrix")} == {
        "matrix/matrix.md", "matrix/matrix.csv", "matrix/matrix.png", "matrix/matrix.html"}
    # matrix.html links every cell to its job's run in the UI.
    page = (sweep_dir / "matrix.html").read_text()
    for result in results:
        assert (f'href="/#/experiments/{experiment.experiment_id}/runs/'
                f'{result["mlflow_run_id"]}?workflowType=machine_learning" target="_top"') in page
    # ... and to the UI's side-by-side comparison of all four, also printed at the end.
    compare = re.search(r'<a href="(/#/compare-runs\?[^"]+)" target="_top">Compare these 4 runs',
                        page)
    assert compare, page
    query = parse_qs(html.unescape(compare.group(1)).split("?", 1)[1])
    assert sorted(json.loads(query["runs"][0])) == sorted(r.info.run_id for r in children)
    assert json.loads(query["experiments"][0]) == [experiment.experiment_id]
    assert query["workflowType"] == ["machine_learning"]
    assert f"Its runs side by side: mlflow ui --backend-store-uri sqlite:///{store_dir}" \
        in proc.stdout
    assert f'<a href="/{html.escape(link)}" target="_top">These jobs in the runs list' in page
    # Run names: short, and unique in the sweep (the swept choices tell them apart); the
    # parent's says how the sweep came out and what it compares, the news first.
    names = [run.info.run_name for run in children]
    assert len(set(names)) == 4 and all(" digits" not in n for n in names), names
    assert parent.info.run_name == f"{counts['passed']}/4 passed: load_api × save_api"
    # Progress after each job; the parent run's link at the end.
    # (Two jobs that end together under joblib can both count 2 done: no "1/4" then.)
    assert "sweep: 4/4 jobs done" in proc.stdout
    assert re.search(r"sweep: [123]/4 jobs done \(", proc.stdout)
    assert "Its parent run (the outcome, the matrix linking each cell to its run):" \
        in proc.stdout
    lines = markdown.splitlines()
    assert lines[0] == "| save_api ↓ / load_api → | keras | saved_model |"
    row = {line.split(" | ")[0].strip("| "): line for line in lines[2:]}
    for r in results:
        cells = row[r["save_api"]].strip("|").split(" | ")
        cell = cells[1 + ["keras", "saved_model"].index(r["load_api"])].strip()
        assert cell.startswith("passed" if r["status"] == "passed" else
                               f"failed in {r['error']['phase']}: {r['error']['type']}")

    # runner.report rebuilds the same table from MLflow alone.
    capsys.readouterr()
    assert report.main(["--store-dir", str(store_dir)]) == 0
    assert markdown in capsys.readouterr().out


def test_matrix_of_tutorial_steps_has_a_row_per_step_and_generations_across():
    steps = {"keras_load": ("keras", "keras"), "mixed_apis": ("keras_saved_model", "saved_model")}
    records = [
        {"tutorial_step": step, "save_api": save, "load_api": load, "keras": keras,
         "load_keras": keras, "status": "passed" if (save, keras) != (
             "keras_saved_model", "v3") else "failed",
         "phase": "save", "type": "ValueError", "message": "Invalid filepath extension"}
        for step, (save, load) in steps.items() for keras in ("v3", "legacy")]
    m = matrix.build(records)
    # save_api and load_api follow from the step: they add no header; keras goes across.
    assert (m.row_dims, m.col_dims) == (["tutorial_step"], ["keras"])
    assert matrix.to_markdown(m).splitlines() == [
        "| tutorial_step ↓ / keras → | v3 | legacy |",
        "|---|---|---|",
        "| keras_load | passed | passed |",
        "| mixed_apis | failed in save: ValueError: Invalid filepath extension | passed |",
    ]


def test_report_without_a_store_says_so_and_creates_nothing(tmp_path, capsys):
    assert report.main(["--store-dir", str(tmp_path / "none")]) == 1
    assert f"No MLflow store at {tmp_path / 'none'}" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_matrix_cells_tell_resume_exact_drifted_inference_only_and_failed():
    def record(save_api, load_api, status="passed", resume=None, **error):
        return {"save_api": save_api, "load_api": load_api, "status": status,
                "resume": resume, **error}

    records = [
        record("keras", "keras", resume={"outcome": "exact", "max_abs_diff": 0.0}),
        record("keras", "hub", resume={"outcome": "drifted", "max_abs_diff": 0.0091,
                                       "cause": "new optimizer"}),
        record("saved_model", "keras", resume={
            "outcome": "n/a", "reason": "inference only: load_api=saved_model gives none"}),
        record("saved_model", "hub", "failed", phase="load", type="OSError",
               message="SavedModel file does not exist at: /tmp/x/saved_model/model.keras"),
    ]
    m = matrix.build(records)
    assert matrix.to_markdown(m).splitlines()[2:] == [
        "| keras | passed, resume exact | passed, resume drifted 9.1e-03 (new optimizer) |",
        "| saved_model | passed, inference only | failed in load: OSError: SavedModel file does "
        "not exist at: … |",
    ]
    # One colour per kind (green exact, amber drifted, blue inference only, red failed), and
    # each cell's label names the cause in a word or two.
    codes = [[m.kind(r, c) for c in m.cols] for r in m.rows]
    assert codes == [[5, 3], [4, 1]]
    assert m.label(("keras",), ("hub",)) == "drifted\nnew optimizer"
    # The same record from a job's MLflow run (tags and metrics) gives the same cell.
    tags = {"save_api": "keras", "load_api": "hub", "status": "passed", "resume": "drifted",
            "resume_cause": "new optimizer"}
    from_run = matrix.record_from_run(tags, {"resume_max_abs_diff": 0.0091})
    assert matrix.outcome(from_run) == "passed, resume drifted 9.1e-03 (new optimizer)"


def test_save_api_paired_by_auto_adds_no_row():
    """save_api=auto follows load_api: the matrix has one row, not a diagonal."""
    records = [{"save_api": save, "load_api": load, "status": "passed"}
               for save, load in (("keras", "keras"), ("saved_model", "saved_model"),
                                  ("saved_model", "hub"))]
    m = matrix.build(records)
    assert (m.row_dims, m.col_dims) == ([], ["load_api"])
