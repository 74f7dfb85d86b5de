"""The rewrite rules, as data, by family; :func:`rules_for` picks the ones a numerics policy allows.

    strict: exact + reassoc rules (the default)
    fast:   also approx rules

Every rule here has a property test in tests/passes/test_rules.py (both sides evaluated on random inputs of
drawn shapes and dtypes); tests/passes/test_rules.py also fails if a rule ships without one.
"""

from __future__ import annotations

from agnostic_rt.passes.pattern import Rule

from . import algebra, attention, inference, layout, linalg

FAMILIES: dict[str, list[Rule]] = {
    "algebra": algebra.RULES,
    "layout": layout.RULES,
    "linalg": linalg.RULES,
    "attention": attention.RULES,
    "inference": inference.RULES,
}

ALL_RULES: list[Rule] = []
for _family, _rules in FAMILIES.items():
    for _rule in _rules:
        _rule.family = _family
        ALL_RULES.append(_rule)

_POLICY = {"strict": ("exact", "reassoc"), "fast": ("exact", "reassoc", "approx")}


def rules_for(numerics: str = "strict", names: list[str] | None = None) -> list[Rule]:
    """The rules a policy allows (optionally only those named).

    >>> len(rules_for("fast")) >= len(rules_for("strict"))
    True
    """
    if numerics not in _POLICY:
        raise ValueError(f"unknown numerics {numerics!r}; expected one of: {', '.join(_POLICY)}")
    allowed = _POLICY[numerics]
    rules = [r for r in ALL_RULES if r.exactness in allowed]
    if names is not None:
        unknown = set(names) - {r.name for r in ALL_RULES}
        if unknown:
            raise ValueError(f"unknown rules {sorted(unknown)}")
        rules = [r for r in rules if r.name in names]
    return rules


def get_rule(name: str) -> Rule:
    for rule in ALL_RULES:
        if rule.name == name:
            return rule
    raise KeyError(f"unknown rule {name!r}; expected one of: {', '.join(r.name for r in ALL_RULES)}")
