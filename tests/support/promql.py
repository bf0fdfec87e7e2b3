"""What a dashboard's PromQL refers to: metric names and label names, for checking a dashboard
against the metrics a scrape really has (a small reader for the PromQL our dashboards use)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.samples import Sample

# PromQL's functions, aggregations and keywords: identifiers that are not metric names.
_WORDS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "rate",
        "irate",
        "increase",
        "delta",
        "idelta",
        "deriv",
        "histogram_quantile",
        "label_replace",
        "label_join",
        "abs",
        "ceil",
        "floor",
        "round",
        "clamp",
        "clamp_min",
        "clamp_max",
        "sort",
        "sort_desc",
        "time",
        "vector",
        "scalar",
        "absent",
        "absent_over_time",
        "avg_over_time",
        "sum_over_time",
        "max_over_time",
        "min_over_time",
        "count_over_time",
        "last_over_time",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "e",
        "inf",
        "nan",
    }
)
# Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = frozenset({"job", "instance"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w$.])([a-zA-Z_:][\w:]*)(\s*\(?)")
_NUMBER = re.compile(r"^\d")


@dataclass
class Refs:
    metrics: set[str] = field(default_factory=set)
    # Label names matched in a selector, by metric; and those grouped by (any metric of the expr).
    matched: dict[str, set[str]] = field(default_factory=dict)
    grouped: set[str] = field(default_factory=set)


def refs(expr: str) -> Refs:
    found = Refs()
    text = _STRING.sub('""', expr)
    for name, inside in _SELECTOR.findall(text):
        found.matched.setdefault(name, set()).update(_MATCHER.findall(inside))
    text = _SELECTOR.sub(lambda m: m[1], text)
    for inside in _GROUPING.findall(text):
        found.grouped.update(label.strip() for label in inside.split(",") if label.strip())
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    for name, call in _IDENT.findall(text):
        if (
            not call.endswith("(")
            and name not in _WORDS
            and not _NUMBER.match(name)
            and name not in ("e", "inf", "nan")
        ):
            found.metrics.add(name)
    found.metrics.update(found.matched)
    return found


def dashboard_exprs(path: Path) -> list[str]:
    dashboard = json.loads(path.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def problems(exprs: list[str], scraped: list[Sample]) -> list[str]:
    """What the expressions name that the scrape does not have (metric names, label names)."""
    labels: dict[str, set[str]] = {}
    for sample in scraped:
        labels.setdefault(sample.name, set()).update(sample.labels)
    wrong = []
    for expr in exprs:
        found = refs(expr)
        if not found.metrics:
            wrong.append(f"{expr}: names no metric")
        known = set(TARGET_LABELS)
        for name in sorted(found.metrics):
            if name not in labels:
                wrong.append(f"{expr}: no metric {name} in the scrape")
                continue
            known |= labels[name]
            unknown = found.matched.get(name, set()) - labels[name] - TARGET_LABELS
            if unknown:
                wrong.append(f"{expr}: {name} has no label {sorted(unknown)}")
        if found.grouped - known:
            wrong.append(f"{expr}: grouped by {sorted(found.grouped - known)}, which no metric of it has")
    return wrong
