"""Push the values `/metrics` serves over OTLP too: the prometheus_client registry, read every interval.

Every process already keeps its metrics in prometheus_client (the mesh's call counters and latency
histograms, the shop's business counters, process and GC figures). Rather than counting everything a
second time with OpenTelemetry instruments, a bridge thread collects the same registry `/metrics`
renders, every BOUTIQUE_METRICS_EXPORT_INTERVAL seconds (10 s by default; OTEL_METRIC_EXPORT_INTERVAL in
ms is honoured too), encodes it as one ExportMetricsServiceRequest and hands it to a sending queue of
its own (`boutique.mesh.export_queue`: bounded, retried through outages, spooled at a stop). The
request is encoded here directly, not through the SDK's MeterProvider and a MetricProducer: the SDK's
data model has no summary, it would convert every point twice per export, and a MeterProvider adds
start-up imports and a thread for nothing the registry does not already do.

How a Prometheus family becomes an OTLP metric (the resource is the spans' own: `service.name`,
`service.instance.id`, ...; the scope is this module):

- counter → a monotonic cumulative sum named as the family, i.e. WITHOUT the `_total` the text format
  adds to the sample (`http_server_requests` here is `http_server_requests_total` on `/metrics`; the
  OpenTelemetry-Prometheus compatibility rules add `_total` back to a monotonic sum); its `_created`
  sample, when it has one, is the start time, else the bridge's start;
- gauge → a gauge; histogram → a cumulative explicit-bucket histogram with the same bounds (the `le`
  values), count (`_count`) and sum (`_sum`); summary → a summary with its quantiles, count and sum;
- info, stateset and anything else → one gauge per sample name (`python_info`, ...).

Labels become attributes, every value is a double, the unit is the family's, else `s` for `_seconds`
and `By` for `_bytes` names. Exemplars (trace_id / span_id labels) go with their data points. Turned on
by `boutique.mesh.tracing.setup_tracing` wherever spans go by OTLP; OTEL_METRICS_EXPORTER=none turns it
off (`/metrics` stays).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb
from opentelemetry.sdk.resources import Resource
from prometheus_client import REGISTRY
from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Sample

from boutique.mesh.export_queue import SendingQueue

log = logging.getLogger(__name__)

SCOPE = "boutique.mesh.metric_export"
CUMULATIVE = pb.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_UNITS = (("_seconds", "s"), ("_bytes", "By"))
_Key = tuple[tuple[str, str], ...]


def any_value(value: Any) -> AnyValue:
    """A Python value as an OTLP AnyValue (text for anything that is not a scalar or a list)."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list | tuple):
        found = AnyValue()
        found.array_value.values.extend(any_value(item) for item in value)
        return found
    return AnyValue(string_value=str(value))


def key_values(attributes: Mapping[str, Any]) -> list[KeyValue]:
    """Attributes as OTLP key-values."""
    return [KeyValue(key=key, value=any_value(value)) for key, value in attributes.items()]


def _unit(family: Any) -> str:
    if family.unit:
        return str(family.unit)
    return next((unit for suffix, unit in _UNITS if family.name.endswith(suffix)), "")


def _key(labels: Mapping[str, str], without: str = "") -> _Key:
    return tuple(sorted((k, v) for k, v in labels.items() if k != without))


def _attributes(key: _Key) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in key]


def _exemplar(sample: Sample, now_ns: int) -> pb.Exemplar | None:
    """A sample's exemplar with its trace and span ids, when it has one."""
    found = sample.exemplar
    if found is None:
        return None
    labels = dict(found.labels)
    exemplar = pb.Exemplar(as_double=float(found.value))
    stamp = found.timestamp
    exemplar.time_unix_nano = int(float(stamp) * 1e9) if stamp else now_ns  # float or Timestamp
    for field, size in (("trace_id", 16), ("span_id", 8)):
        text = labels.pop(field, "")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) == size:
            setattr(exemplar, field, raw)
    exemplar.filtered_attributes.extend(_attributes(_key(labels)))
    return exemplar


class _Times:
    """Start and now of one collection, and the `_created` times of a family's series."""

    def __init__(self, start_ns: int, now_ns: int) -> None:
        self.start_ns = start_ns
        self.now_ns = now_ns

    def created(self, samples: Sequence[Sample], without: str = "") -> dict[_Key, int]:
        return {_key(s.labels, without): int(s.value * 1e9) for s in samples if s.name.endswith("_created")}


def _counter(metric: pb.Metric, family: Any, times: _Times) -> int:
    metric.sum.is_monotonic = True
    metric.sum.aggregation_temporality = CUMULATIVE
    created = times.created(family.samples)
    points = 0
    for sample in family.samples:
        if not sample.name.endswith("_total"):
            continue
        key = _key(sample.labels)
        point = metric.sum.data_points.add(
            start_time_unix_nano=created.get(key, times.start_ns),
            time_unix_nano=times.now_ns,
            as_double=float(sample.value),
        )
        point.attributes.extend(_attributes(key))
        if (exemplar := _exemplar(sample, times.now_ns)) is not None:
            point.exemplars.append(exemplar)
        points += 1
    return points


def _gauge(metric: pb.Metric, samples: Iterable[Sample], times: _Times) -> int:
    points = 0
    for sample in samples:
        point = metric.gauge.data_points.add(time_unix_nano=times.now_ns, as_double=float(sample.value))
        point.attributes.extend(_attributes(_key(sample.labels)))
        points += 1
    return points


def _histogram(metric: pb.Metric, family: Any, times: _Times) -> int:
    metric.histogram.aggregation_temporality = CUMULATIVE
    created = times.created(family.samples, "le")
    series: dict[_Key, dict[str, Any]] = {}
    for sample in family.samples:
        key = _key(sample.labels, "le")
        entry = series.setdefault(key, {"buckets": [], "count": None, "sum": 0.0, "exemplars": []})
        if sample.name.endswith("_bucket"):
            entry["buckets"].append((float(sample.labels["le"]), float(sample.value)))
            if (exemplar := _exemplar(sample, times.now_ns)) is not None:
                entry["exemplars"].append(exemplar)
        elif sample.name.endswith("_count"):
            entry["count"] = float(sample.value)
        elif sample.name.endswith("_sum"):
            entry["sum"] = float(sample.value)
    for key, entry in series.items():
        buckets = sorted(entry["buckets"])
        if not buckets:
            continue
        bounds = [bound for bound, _ in buckets if not math.isinf(bound)]
        cumulative = [count for _, count in buckets]
        total = entry["count"] if entry["count"] is not None else cumulative[-1]
        if len(cumulative) == len(bounds):  # no +Inf bucket: the rest of the count is above the last bound
            cumulative.append(total)
        counts = [round(now - before) for before, now in zip([0.0, *cumulative], cumulative, strict=False)]
        point = metric.histogram.data_points.add(
            start_time_unix_nano=created.get(key, times.start_ns),
            time_unix_nano=times.now_ns,
            count=round(total),
            sum=entry["sum"],
            explicit_bounds=bounds,
            bucket_counts=counts,
        )
        point.attributes.extend(_attributes(key))
        point.exemplars.extend(entry["exemplars"])
    return len(series)


def _summary(metric: pb.Metric, family: Any, times: _Times) -> int:
    created = times.created(family.samples, "quantile")
    series: dict[_Key, pb.SummaryDataPoint] = {}
    for sample in family.samples:
        if sample.name.endswith("_created"):
            continue
        key = _key(sample.labels, "quantile")
        point = series.get(key)
        if point is None:
            point = series[key] = metric.summary.data_points.add(
                start_time_unix_nano=created.get(key, times.start_ns), time_unix_nano=times.now_ns
            )
            point.attributes.extend(_attributes(key))
        if sample.name.endswith("_count"):
            point.count = round(sample.value)
        elif sample.name.endswith("_sum"):
            point.sum = float(sample.value)
        elif "quantile" in sample.labels:
            point.quantile_values.add(quantile=float(sample.labels["quantile"]), value=float(sample.value))
    return len(series)


def _add_family(metrics: Any, family: Any, times: _Times) -> int:
    """Add one Prometheus family's metric(s); how many data points they hold."""

    def new(name: str) -> pb.Metric:
        metric: pb.Metric = metrics.add(name=name, description=family.documentation, unit=_unit(family))
        return metric

    if family.type == "counter":
        return _counter(new(family.name), family, times)
    if family.type == "gauge":
        return _gauge(new(family.name), family.samples, times)
    if family.type == "histogram":
        return _histogram(new(family.name), family, times)
    if family.type == "summary":
        return _summary(new(family.name), family, times)
    by_name: dict[str, list[Sample]] = {}
    for sample in family.samples:  # info, stateset, unknown, gaugehistogram: each sample name a gauge
        by_name.setdefault(sample.name, []).append(sample)
    return sum(_gauge(new(name), samples, times) for name, samples in by_name.items())


def encode_registry(
    registry: CollectorRegistry, resource: Resource, start_ns: int, now_ns: int | None = None
) -> tuple[ExportMetricsServiceRequest, int]:
    """Everything `registry` holds now as one export request, and how many data points it carries."""
    times = _Times(start_ns, now_ns if now_ns is not None else time.time_ns())
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.extend(key_values(resource.attributes))
    scope_metrics = resource_metrics.scope_metrics.add()
    scope_metrics.scope.name = SCOPE
    points = 0
    for family in registry.collect():
        points += _add_family(scope_metrics.metrics, family, times)
    return request, points


class MetricsBridge:
    """Collect the registry every `interval` seconds in a thread of its own and queue it for sending."""

    def __init__(
        self,
        queue: SendingQueue,
        resource: Resource,
        interval: float,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.queue = queue
        self.resource = resource
        self.interval = interval
        self.registry = registry
        self.start_ns = time.time_ns()
        self.exports = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otlp-metrics-bridge", daemon=True)
        self._thread.start()

    def export(self) -> int:
        """Collect and queue the registry once now; how many data points went."""
        request, points = encode_registry(self.registry, self.resource, self.start_ns)
        if points:
            self.queue.submit(request.SerializeToString(), points)
        self.exports += 1
        return points

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.export()
            except Exception:  # a collector's bug must not end the exports
                self.failures += 1
                log.exception("metrics export failed")

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the thread and queue one last collection (the values as they are at the stop)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout)
        try:
            self.export()
        except Exception:
            log.exception("metrics export failed")
