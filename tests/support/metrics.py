"""Reading ``/metrics`` with prometheus_client's own text parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples(text: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` (e.g. ``ssegate_streams_total``) whose labels include
    ``labels``: the value whatever the other labels are. 0 when there is none."""
    return sum(
        sample.value
        for sample in samples(text)
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def present(text: str, name: str) -> bool:
    return any(sample.name == name for sample in samples(text))
