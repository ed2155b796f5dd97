"""Reading a ``/metrics`` page (Prometheus text) with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def metric_samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """The samples named ``name`` (``..._total``, ``..._count``) whose labels include
    ``labels``: each one's labels and value."""
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]


def metric_total(text: str, name: str, **labels: str) -> float:
    """The sum of :func:`metric_samples`; 0 when there is none."""
    return sum(value for _, value in metric_samples(text, name, **labels))


def metric_by(text: str, name: str, label: str) -> dict[str, float]:
    """The samples named ``name``, by the value of their label ``label``."""
    return {found[label]: value for found, value in metric_samples(text, name) if label in found}
