"""Reading Prometheus samples the way a scraper does: through the registry, by name and labels."""

from __future__ import annotations


def sample(metrics, name: str, **labels) -> float | None:
    """The value of sample ``name`` with ``labels`` in ``metrics.registry`` (None if never set).

    Counters are exposed with the ``_total`` suffix, as ``/metrics`` shows them.
    """
    return metrics.registry.get_sample_value(name, labels)
