"""One registry per choice: the save/load API table (runner.core.apis) and the schema's options
agree with conf/, with the help, and with the job's implementations; what derives from the
table (the save API auto pairs, the expected failures, the option notes) says what it should."""

from __future__ import annotations

import ast

import pytest
import yaml
from helpers.run import ROOT

from runner.core import apis, hints, schema

CONF = ROOT / "conf"


def conf_options(group: str) -> set[str]:
    return {p.stem for p in (CONF / group).glob("*.yaml")}


@pytest.mark.parametrize("group", sorted(schema.OPTION_SCHEMAS))
def test_every_group_option_in_conf_has_its_schema_and_the_reverse(group):
    # model=custom, data=custom: the user's `_target_`, checked by its target, not a schema.
    own = {"custom"} if group in schema.TARGET_GROUPS else set()
    presets = set(schema.TARGET_PRESETS.get(group, ()))
    assert conf_options(group) == set(schema.OPTION_SCHEMAS[group]) | own | presets
    for option in own:
        assert yaml.safe_load((CONF / group / f"{option}.yaml").read_text())["_target_"] == "???"
    for option in presets:  # the families: `_target_` options named as they are chosen
        node = yaml.safe_load((CONF / group / f"{option}.yaml").read_text())
        assert node["_target_"].startswith("runner.job.families."), option
        assert node["name"] == option
    for option in schema.OPTION_SCHEMAS[group]:
        text = (CONF / group / f"{option}.yaml").read_text()
        node = yaml.safe_load(text)
        assert node["defaults"][0] == f"/schema/{group}/{option}@_here_", (group, option)
        # data=tfds: its name is the TFDS dataset's, which the user gives (data.name=...).
        # load_tf=same: the training side's release, whichever it is.
        same = (group, option) == ("load_tf", "same")
        assert node["name"] == ("???" if option == "tfds" else "${tf.name}" if same else option)


@pytest.mark.parametrize("group", ["save_api", "load_api"])
def test_the_api_table_is_what_conf_offers(group):
    assert set(apis.options(group)) == conf_options(group)
    assert list(schema.OPTION_SCHEMAS[group]) == apis.options(group)


def test_a_load_api_that_builds_a_new_model_takes_an_optimizer_and_the_others_none():
    for name, api in apis.LOAD_APIS.items():
        node = yaml.safe_load((CONF / "load_api" / f"{name}.yaml").read_text())
        assert ("optimizer" in node) == api.new_model, name
        assert (schema.OPTION_SCHEMAS["load_api"][name] is schema.RetrainingLoadApi) == (
            api.new_model)


def registered(module: str, decorator: str) -> list[str]:
    """The names a job module registers with @decorator("name"), read from its source."""
    tree = ast.parse((ROOT / "runner" / "job" / f"{module}.py").read_text())
    return [d.args[0].value for node in tree.body if isinstance(node, ast.FunctionDef)
            for d in node.decorator_list
            if isinstance(d, ast.Call) and getattr(d.func, "id", None) == decorator]


def test_the_job_implements_every_api_of_the_table_once():
    assert registered("saving", "saver") == list(apis.SAVE_APIS)
    assert registered("loading", "loader") == list(apis.LOAD_APIS)


def test_a_missing_or_unknown_implementation_fails_at_import_naming_it():
    last = list(apis.SAVE_APIS)[-1]
    with pytest.raises(RuntimeError, match=f"save_api={last} has no implementation"):
        apis.check_implemented("save_api", dict.fromkeys(list(apis.SAVE_APIS)[:-1]), "here")
    with pytest.raises(RuntimeError, match="load_api=pickle is not in the registry"):
        apis.check_implemented("load_api", dict.fromkeys([*apis.LOAD_APIS, "pickle"]), "here")
    apis.check_implemented("load_api", dict.fromkeys(apis.LOAD_APIS), "here")


def test_the_help_lists_each_groups_options_from_the_table():
    template = yaml.safe_load((CONF / "hydra" / "help" / "runner.yaml").read_text())["template"]
    for group in schema.OPTION_SCHEMAS:
        if group != "load_keras":  # "(= keras) | v3 | legacy": it follows keras
            assert f"${{runner.options:{group}}}" in template, group
    assert schema.group_options("save_api") == (
        "auto | keras | saved_model | keras_saved_model | export | checkpoint | weights | "
        "model_checkpoint | backup_and_restore")


@pytest.mark.parametrize("load_api", list(apis.LOAD_APIS))
@pytest.mark.parametrize("keras", ["v3", "legacy"])
def test_what_auto_pairs_with_a_load_api_is_never_expected_to_fail(load_api, keras):
    paired = hints.paired_save_api(load_api)
    assert paired in apis.SAVE_APIS
    assert hints.expected_failure(paired, load_api, keras, keras) is None


@pytest.mark.parametrize("save_api, load_api, keras, expected", [
    # Measured (docs/matrices.md): each of these fails, each of the None ones passes.
    ("keras", "saved_model", "v3", "in load: save_api=keras writes a .keras file"),
    ("export", "keras", "v3", "in load: save_api=export writes a SavedModel directory"),
    ("saved_model", "keras", "legacy", "in load"),
    ("checkpoint", "weights", "v3", "in load: save_api=checkpoint writes a tf.train.Checkpoint"),
    ("keras_saved_model", "saved_model", "v3", "in save: Keras 3's Model.save"),
    ("keras_saved_model", "keras", "legacy", None),
    ("keras_saved_model", "hub", "legacy", None),
    ("keras", "weights", "v3", None),
    ("export", "tfsm_layer", "v3", None),
])
def test_expected_failures_follow_what_each_api_writes_and_reads(save_api, load_api, keras,
                                                                 expected):
    said = hints.expected_failure(save_api, load_api, keras, keras)
    if expected is None:
        assert said is None
    else:
        assert said is not None and said.startswith(f"expected to fail {expected}")
        if said.startswith("expected to fail in load"):
            assert f"save_api={apis.LOAD_APIS[load_api].paired_save}" in said


def test_options_an_api_cannot_apply_are_said_not_dropped():
    assert apis.option_notes("saved_model", "/cpu:0", "save_variable_devices") == []
    assert apis.option_notes("keras", None, None) == []
    assert apis.option_notes("export", "/cpu:0", "save_variable_devices") == [
        "io_device=/cpu:0 not applied: Model.export takes no SaveOptions",
        "save_api.variable_policy=save_variable_devices not applied: Model.export takes no "
        "SaveOptions"]
    assert apis.option_notes("checkpoint", "/cpu:0", "expand_distributed_variables") == [
        "save_api.variable_policy=expand_distributed_variables not applied: "
        "tf.train.CheckpointOptions has no variable policy"]
