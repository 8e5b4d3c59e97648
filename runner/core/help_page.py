"""`python -m runner --help` in well under a second.

Hydra's help fills every placeholder its template might name before it renders the template, and
listing the config groups ($APP_CONFIG_GROUPS, $HYDRA_CONFIG_GROUPS) composes each group once
more: 3-5 s with this project's groups (measured), for lists our template (conf/hydra/help) does
not show; it lists the groups itself, from the schema's table. So only the placeholders the
template names are filled.
"""

from __future__ import annotations

import string
from typing import Any

from hydra._internal.hydra import Hydra

_hydra_get_help = Hydra.get_help


def _get_help(self: Hydra, help_cfg: Any, cfg: Any, args_parser: Any, resolve: bool) -> str:
    template = string.Template(help_cfg.template)
    named = {m.group("named") or m.group("braced")
             for m in template.pattern.finditer(template.template)}
    if named & {"APP_CONFIG_GROUPS", "HYDRA_CONFIG_GROUPS"}:
        return _hydra_get_help(self, help_cfg, cfg, args_parser, resolve)
    self.format_config_groups = lambda *args, **kwargs: ""  # type: ignore[method-assign]
    try:
        return _hydra_get_help(self, help_cfg, cfg, args_parser, resolve)
    finally:
        del self.format_config_groups


def install() -> None:
    """Make Hydra's help fill only the placeholders the help template names."""
    Hydra.get_help = _get_help
