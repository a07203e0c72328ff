"""The same metrics for a prometheus_client registry (e.g. to embed pylvs metrics in another exporter).

The families come from one rendering of exposition.py, read back with Prometheus' own parser, so
there is one definition of every name, type and label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from pylvs.metrics.exposition import Exposition
from pylvs.metrics.model import Extras, Rows


class IPVSCollector(Collector):
    def __init__(self, rows: Callable[[], Rows], extras: Callable[[], Extras] | None = None) -> None:
        self._rows = rows
        self._extras = extras
        self._expo = Exposition()

    def describe(self) -> Iterable[Metric]:
        return []  # families depend on the rules: nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        extras = self._extras() if self._extras else None
        text = self._expo.render(self._rows(), extras).decode()
        yield from text_string_to_metric_families(text)
