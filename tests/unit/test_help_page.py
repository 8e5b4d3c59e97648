"""--help fills only the placeholders its template names: Hydra's listing of every config group
(3-5 s here) runs only for a template that shows it."""

from __future__ import annotations

from types import SimpleNamespace

from hydra._internal.hydra import Hydra
from omegaconf import OmegaConf

from runner.core import help_page


class Counting(Hydra):
    def __init__(self) -> None:  # no config loader: only the help's rendering is under test
        self.listed = 0

    def format_config_groups(self, predicate, compact=True):  # noqa: ANN001, ANN201
        self.listed += 1
        return "GROUPS"

    def format_args_help(self, args_parser):  # noqa: ANN001, ANN201
        return "FLAGS"


def render(template: str) -> tuple[str, int]:
    hydra = Counting()
    text = help_page._get_help(hydra, SimpleNamespace(template=template),
                               OmegaConf.create({"a": 1}), None, resolve=False)
    return text, hydra.listed


def test_a_template_without_group_lists_never_lists_the_groups():
    assert render("usage\n$CONFIG") == ("usage\na: 1\n", 0)


def test_a_template_that_shows_the_groups_gets_them():
    assert render("$APP_CONFIG_GROUPS|${FLAGS_HELP}") == ("GROUPS|FLAGS", 2)


def test_the_instance_is_left_as_it_was():
    hydra = Counting()
    help_page._get_help(hydra, SimpleNamespace(template="x"), OmegaConf.create({}), None, False)
    assert "format_config_groups" not in vars(hydra)
