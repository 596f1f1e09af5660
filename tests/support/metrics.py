"""Read a Prometheus text exposition into {(sample name, frozenset(labels)): value} for assertions."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


class Scrape(dict):
    """One scrape: `scrape.value("proxyvision_requests_total", model="m", status="ok")` (0.0 if absent)."""

    def value(self, name: str, **labels: str) -> float:
        total = 0.0
        for (sample, sample_labels), value in self.items():
            if sample == name and all(dict(sample_labels).get(k) == v for k, v in labels.items()):
                total += value
        return total


def scrape(url: str) -> Scrape:
    """GET `url` (a /metrics endpoint) and parse it."""
    response = httpx.get(url, timeout=5)
    response.raise_for_status()
    result = Scrape()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            result[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return result
