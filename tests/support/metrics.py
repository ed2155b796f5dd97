"""Reading a ``/metrics`` page (Prometheus text) with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def metric_total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` (``..._total``, ``..._count``) whose labels
    include ``labels``; 0 when there is none."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def metric_by(text: str, name: str, label: str) -> dict[str, float]:
    """The samples named ``name``, by the value of their label ``label``."""
    return {
        sample.labels[label]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and label in sample.labels
    }
