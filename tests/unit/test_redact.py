"""Secrets out of everything written: values of secret-named variables and URL passwords."""

from __future__ import annotations

from runner.core import redact

ENV = {"MLFLOW_TRACKING_PASSWORD": "hunter2-long", "MY_API_KEY": "k-123456",
       "MLFLOW_TRACKING_USERNAME": "alice-the-user", "SOME_TOKEN": "1", "HOME": "/root/x"}


def test_secret_values_and_url_passwords_are_masked():
    text = ("user alice-the-user, password hunter2-long, key k-123456 at "
            "http://bob:pw-9@host:5000/x, home /root/x, token 1")
    assert redact.text(text, ENV) == (
        "user ***, password ***, key *** at http://bob:***@host:5000/x, home /root/x, token 1")


def test_only_secret_names_long_enough_values_count():
    assert redact.secrets(ENV) == ["alice-the-user", "hunter2-long", "k-123456"]


def test_a_tree_is_masked_in_every_string(monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", "s3cret-value")
    tree = {"a": ["x s3cret-value", {"b": ("s3cret-value",)}], "n": 3}
    assert redact.tree(tree) == {"a": ["x ***", {"b": ["***"]}], "n": 3}
