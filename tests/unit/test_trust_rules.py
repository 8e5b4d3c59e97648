"""What counts as code a saved model carries (runner.core.trust): Python in Keras configs, and
SavedModel ops outside the allow-list, the saver's checkpoint ops allowed in its functions only."""

from __future__ import annotations

from runner.core import trust


def test_a_lambda_anywhere_in_a_config_is_found_by_name_and_place():
    config = {"class_name": "Functional", "config": {"layers": [
        {"class_name": "InputLayer", "config": {"name": "x"}},
        {"class_name": "Lambda", "config": {"name": "double", "function": ["4wEA..."],
                                            "function_type": "lambda"}}]}}
    (found,) = trust.python_in_config(config, "model.h5: model_config")
    assert found.what.startswith("Lambda layer 'double'")
    assert found.where == "model.h5: model_config config.layers[1]"


def test_other_serialized_python_is_found_and_plain_configs_pass():
    assert [f.what for f in trust.python_in_config(
        {"activation": {"class_name": "__lambda__", "config": {"value": "..."}}}, "c")] == [
        "a Python function serialized as bytecode"]
    plain = {"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Dense", "config": {"name": "d", "activation": "relu"}}]}}
    assert list(trust.python_in_config(plain, "c")) == []


def test_ops_outside_the_allow_list_are_named_and_the_savers_own_ops_allowed_there_only():
    functions = {"": ["Placeholder", "StatefulPartitionedCall"],
                 "__inference_serve_1": ["MatMul", "WriteFile", "ReadVariableOp"],
                 "__inference__traced_save_2": ["SaveV2", "MergeV2Checkpoints", "StringJoin"],
                 "__inference_other_3": ["SaveV2", "PrintV2"]}
    found = trust.ops_outside(functions, {"__inference__traced_save_2"}, "model/saved_model.pb")
    assert [f.what.split(" (")[0] for f in found] == ["op PrintV2", "op SaveV2", "op WriteFile"]
    assert found[2].where == "model/saved_model.pb, in __inference_serve_1"
    assert trust.ops_outside({"f": ["Conv2D", "Relu", "BiasAdd"]}, set(), "m") == []


def test_no_file_or_process_op_is_on_the_allow_list():
    touching = {"ReadFile", "WriteFile", "MatchingFiles", "PrintV2", "Print", "ImmutableConst",
                "PyFunc", "EagerPyFunc", "SaveV2", "RestoreV2", "Save", "Restore",
                "TFRecordDataset", "WholeFileReaderV2", "WriteSummary", "DebugIdentityV2",
                "InitializeTableFromTextFileV2"}
    assert touching & trust.COMPUTE_OPS == set()


def test_the_refusal_names_what_it_found_and_the_opt_in():
    findings = [trust.Finding(f"op Op{i}", "m") for i in range(7)]
    message = str(trust.refusal(findings, "/x/model"))
    assert message.startswith("/x/model was not loaded: it carries what could run code")
    assert "op Op0 (m)" in message and "and 2 more" in message and "load.trust=true" in message
