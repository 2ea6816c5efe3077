"""The metric and label names a PromQL expression uses, read well enough to check dashboards against.

Not a PromQL parser: strings, ranges and label lists are cut out, and what is left of the identifiers
that are not functions, aggregations or keywords are metric names. Grafana's variables are put in as
plain values first, so the expression is also one a real Prometheus can evaluate.
"""

from __future__ import annotations

import re

GRAFANA_VALUES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
}
KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"}
    | {"inf", "nan", "Inf", "NaN"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(\s*\()?")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def substitute(expr: str, variables: dict[str, str] | None = None) -> str:
    """The expression with Grafana's built-in and the dashboard's own variables replaced by values."""
    for name, value in GRAFANA_VALUES.items():
        expr = expr.replace(name, value)
    values = variables or {}
    return _VARIABLE.sub(lambda m: values.get(m.group(1) or m.group(2), ".*"), expr)


def metric_names(expr: str) -> set[str]:
    """Every metric an expression selects."""
    text = _STRING.sub('""', substitute(expr))
    text = _MATCHERS.sub("{}", text)
    text = _RANGE.sub("", text)
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name in KEYWORDS:
            continue  # a function or an aggregation (followed by its parenthesis), or a keyword
        names.add(name)
    return names


def label_names(expr: str) -> set[str]:
    """Every label an expression matches on or groups by."""
    text = _STRING.sub('""', substitute(expr))
    labels: set[str] = set()
    for block in _MATCHERS.findall(text):
        labels.update(_MATCHER_LABEL.findall(block))
    for _keyword, listed in _LABEL_LIST.findall(text):
        labels.update(part.strip() for part in listed.split(",") if part.strip())
    return labels
