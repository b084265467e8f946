"""Prometheus metrics at /metrics, safe under several gunicorn processes.

Counters and histograms of the API processes go through prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``; gunicorn_conf.py sets and
cleans it). Worker figures (model version, batch sizes, inference latency) and
queue depth are read from Redis at scrape time by a custom collector.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

REQUESTS = Counter("digits_http_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram(
    "digits_http_request_seconds", "HTTP request latency", ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PREDICTIONS = Counter("digits_predictions_total", "Predictions answered, by digit", ["digit"])
ERRORS = Counter("digits_errors_total", "Error answers, by code", ["code"])
GROUPS = Histogram(
    "digits_dispatch_group_size", "Images that travelled as one Celery task",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
HEDGES = Counter("digits_hedged_tasks_total", "Tasks sent a second time after no answer")


def observe_group(size: int, hedged: bool) -> None:
    GROUPS.observe(size)
    if hedged:
        HEDGES.inc()


class WorkerCollector:
    """Per-worker figures from the heartbeats, and the queue's depth, at scrape time."""

    def __init__(self, registry_of_workers):
        self.workers = registry_of_workers

    def collect(self):
        redis_ok, workers, _ = self.workers.snapshot()
        up = GaugeMetricFamily("digits_redis_up", "1 when the API reaches Redis")
        up.add_metric([], 1.0 if redis_ok else 0.0)
        yield up
        live = GaugeMetricFamily("digits_workers_live", "Workers with a fresh heartbeat")
        live.add_metric([], float(len(workers)))
        yield live
        depth = self.workers.queue_depth() if redis_ok else None
        if depth is not None:
            q = GaugeMetricFamily("digits_queue_depth", "Tasks waiting in the Celery queue")
            q.add_metric([], float(depth))
            yield q
        version = GaugeMetricFamily("digits_worker_model_version",
                                    "Model version each worker serves", labels=["worker"])
        images = CounterMetricFamily("digits_worker_images", "Images run through the model",
                                     labels=["worker"])
        reloads = CounterMetricFamily("digits_worker_model_reloads",
                                      "Hot reloads that swapped models", labels=["worker"])
        batch = HistogramMetricFamily("digits_worker_batch_size",
                                      "Images per forward pass", labels=["worker"])
        infer = HistogramMetricFamily("digits_worker_inference_seconds",
                                      "Seconds per forward pass", labels=["worker"])
        for w in workers:
            name = str(w.get("hostname", "?"))
            if w.get("model_version") is not None:
                version.add_metric([name], float(w["model_version"]))
            stats = w.get("stats") or {}
            images.add_metric([name], float(stats.get("images", 0)))
            reloads.add_metric([name], float(w.get("reloads", 0)))
            pairs = ((batch, "batch_buckets", stats.get("images", 0)),
                     (infer, "latency_buckets", stats.get("inference_seconds", 0)))
            for family, key, total in pairs:
                buckets = [(edge, float(n)) for edge, n in (stats.get(key) or {}).items()]
                buckets.append(("+Inf", float(stats.get("batches", 0))))
                family.add_metric([name], buckets, float(total))
        yield from (version, images, reloads, batch, infer)


def render(worker_registry) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    if values.ValueClass is not values.MutexValue:  # multiprocess mode (gunicorn_conf.py)
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    registry_with_workers = CollectorRegistry()
    registry_with_workers.register(WorkerCollector(worker_registry))
    body = generate_latest(registry) + generate_latest(registry_with_workers)
    return body, CONTENT_TYPE_LATEST
