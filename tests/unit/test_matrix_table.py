"""The compatibility matrix from job records: which dimensions become headers, each job's
outcome judged once (kind, words, label), cells that hold several jobs, the HTML's links."""

from __future__ import annotations

from urllib.parse import parse_qs

from runner.tracking import links, matrix
from runner.tracking.matrix import Kind


def record(save_api="keras", load_api="keras", status="passed", resume=None, **more):
    return {"save_api": save_api, "load_api": load_api, "keras": "v3", "load_keras": "v3",
            "status": status, "resume": resume, **more}


def test_only_what_the_sweep_varied_becomes_a_header():
    m = matrix.build([record("keras", "keras"), record("saved_model", "keras")])
    assert (m.row_dims, m.col_dims) == (["save_api"], [])
    m = matrix.build([record("keras"), record("saved_model", keras="legacy", load_keras="legacy")])
    assert (m.row_dims, m.col_dims) == (["save_api"], ["keras"])  # nothing load-side: across
    m = matrix.build([record(load_api="keras"), record(load_api="hub", keras="legacy",
                                                       load_keras="legacy")])
    assert (m.row_dims, m.col_dims) == (["keras"], ["load_api"])


def test_each_outcome_has_its_kind_words_and_label():
    cases = [
        (record(resume={"outcome": "exact", "max_abs_diff": 0.0}),
         Kind.PASSED, "passed, resume exact", "exact"),
        (record(resume={"outcome": "drifted", "max_abs_diff": 0.46, "cause": "iterations reset"}),
         Kind.DRIFTED, "passed, resume drifted 4.6e-01 (iterations reset)",
         "drifted\niterations reset"),
        (record(resume={"outcome": "error", "cause": "uneven split"}),
         Kind.DRIFTED, "passed, resume error (uneven split)", "resume error\nuneven split"),
        (record(resume={"outcome": "n/a", "reason": "inference only: load_api=saved_model"}),
         Kind.INFERENCE, "passed, inference only", "inference\nonly"),
        (record(resume={"outcome": "n/a", "reason": "verify.resume_steps=0"}),
         Kind.PASSED, "passed", "passed"),
        (record(status="interrupted", phase="train", type="Interrupted",
                message="interrupted by SIGTERM"),
         Kind.FAILED, "interrupted in train: Interrupted: interrupted by SIGTERM",
         "interrupted\ntrain"),
    ]
    for rec, kind, text, label in cases:
        assert matrix.judge(rec) == matrix.Outcome(kind, text, label)


def test_a_failure_says_type_and_words_without_paths_cut_to_a_cell():
    rec = record(status="failed", phase="load", type="OSError",
                 message="SavedModel file does not exist at: /tmp/a/saved_model/model.keras/"
                         "{saved_model.pbtxt|saved_model.pb}\nmore lines")
    text = matrix.outcome(rec)
    assert text.startswith("failed in load: OSError: SavedModel file does not exist at: …")
    assert len(text) <= len("failed in load: ") + matrix.REASON_CHARS


def test_a_cell_of_several_jobs_joins_their_words_and_mixes_their_colour():
    passed = record(resume={"outcome": "exact"})
    failed = record(status="failed", phase="load", type="ValueError", message="bad")
    m = matrix.build([passed, passed, failed])
    (row,), (col,) = m.rows, m.cols
    assert m.cell(row, col) == "passed, resume exact; failed in load: ValueError: bad"
    assert m.kind(row, col) is Kind.MIXED
    assert m.label(row, col) == "exact\nfailed\nload"
    assert m.kind(row, ("nothing",)) is Kind.NONE


def test_html_colours_each_cell_and_links_its_runs():
    m = matrix.build([record("keras", run_id="r1"), record("export", status="failed",
                                                           phase="load", type="E", message="x",
                                                           run_id="r2")])
    page = matrix.to_html(m, href=lambda run: f"/#/runs/{run}", compare="/#/compare",
                          runs_list="/#/list")
    assert 'href="/#/runs/r1"' in page and 'href="/#/runs/r2"' in page
    assert f'background:{matrix.COLOURS[Kind.PASSED]}' in page
    assert f'background:{matrix.COLOURS[Kind.FAILED]}' in page
    assert '<a href="/#/compare" target="_top">Compare these 2 runs side by side' in page
    assert '<a href="/#/list" target="_top">These jobs in the runs list, by outcome' in page


def test_markdown_and_csv_hold_the_same_table():
    m = matrix.build([record("keras", "keras"), record("keras", "hub", status="failed",
                                                       phase="load", type="E", message="x|y")])
    markdown = matrix.to_markdown(m).splitlines()
    assert markdown[0] == "| (all) ↓ / load_api → | keras | hub |"
    assert markdown[2] == "| (all) | passed | failed in load: E: x\\|y |"
    assert matrix.to_csv(m).splitlines()[1] == "(all),passed,failed in load: E: x|y"


def test_the_runs_list_link_filters_to_the_sweeps_jobs_unfolded():
    page = links.runs_page("7", "abc123")
    path, query = page.split("?", 1)
    assert path == "#/experiments/7/runs"
    params = parse_qs(query)
    assert params["searchFilter"] == ["tags.mlflow.parentRunId = 'abc123'"]
    # A sort other than by date: MLflow 3.17's runs table folds children under their parent
    # while sorted by date (its default), filtered or not.
    assert params["orderByKey"] == ["metrics.`outcome`"] and params["orderByAsc"] == ["false"]
    assert params["workflowType"] == ["machine_learning"]
