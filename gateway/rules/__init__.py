"""The rule engine: rule files in, load commands out (pure: ``now`` is passed in).

- :mod:`.lexer`, :mod:`.parser`, :mod:`.ast`, :mod:`.compile`: the expression
  language, parsed at load time into a frozen tree and checked closures (no eval);
- :mod:`.loads`, :mod:`.rulefile`: ``[[load]]`` and ``[[rule]]`` TOML tables to a
  frozen :class:`RuleSet`; errors carry ``file:line:col``;
- :mod:`.state`: the namespace rules see (readings, prices, DR events, time, loads);
- :mod:`.engine`: :class:`Engine`, which decides the :class:`~gateway.model.LoadCommand` s;
- :mod:`.simulate`: ``han-gateway rules simulate``, a dry run over recorded history.
"""

from gateway.rules.engine import Engine, Override, RuleStatus, format_command
from gateway.rules.loads import LoadSpec
from gateway.rules.rulefile import (
    Action,
    RuleSet,
    RuleSpec,
    Settings,
    load_rule_dir,
    load_rule_files,
    parse_rule_texts,
)
from gateway.rules.state import Inputs

__all__ = [
    "Action",
    "Engine",
    "Inputs",
    "LoadSpec",
    "Override",
    "RuleSet",
    "RuleSpec",
    "RuleStatus",
    "Settings",
    "format_command",
    "load_rule_dir",
    "load_rule_files",
    "parse_rule_texts",
]
