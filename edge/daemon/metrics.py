"""The daemon's counters, gauges and histograms, kept and exposed by `prometheus-client`.

A thin layer over it: metrics are created on one `Registry` (not the library's global one, so two
daemons in one process, as in the tests, do not collide), updated with positional label values
(``counter.inc("imu", "bad_json")``), read back with ``get`` (tests, the stats message), and served
on loopback with the library's own text exposition. prometheus-client guards every value with its
own lock, so the worker, the network thread and the HTTP thread may all touch a metric.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import prometheus_client
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

prometheus_client.disable_created_metrics()      # no *_created series: scrapes carry only what we count


class _Metric:
    def __init__(self, registry: "Registry", kind, name: str, help: str, labels=(), **kw):
        self.name, self.label_names = name, tuple(labels)
        self.metric = kind(name, help, self.label_names, registry=registry.collectors, **kw)
        registry.metrics.append(self)

    def _child(self, labels):
        return self.metric.labels(*labels) if labels else self.metric

    def values(self) -> dict:
        """Label values -> value of the main sample (a counter's _total, a gauge, a histogram's _count)."""
        out = {}
        for family in self.metric.collect():
            for s in family.samples:
                if s.name in (self.name, f"{self.name}_total", f"{self.name}_count") and "le" not in s.labels:
                    out[tuple(s.labels[n] for n in self.label_names)] = s.value
        return out

    def get(self, *labels) -> float:
        return self.values().get(tuple(str(v) for v in labels), 0.0)


class Counter(_Metric):
    def __init__(self, registry, name, help, labels=()):
        super().__init__(registry, prometheus_client.Counter, name, help, labels)

    def inc(self, *labels, by: float = 1.0) -> None:
        if by:
            self._child(labels).inc(by)


class Gauge(_Metric):
    def __init__(self, registry, name, help, labels=()):
        super().__init__(registry, prometheus_client.Gauge, name, help, labels)

    def set(self, *labels, value: float) -> None:
        self._child(labels).set(value)


class Histogram(_Metric):
    def __init__(self, registry, name, help, buckets, labels=()):
        super().__init__(registry, prometheus_client.Histogram, name, help, labels, buckets=sorted(buckets))

    def observe(self, value: float, *labels) -> None:
        self._child(labels).observe(value)


class Registry:
    """The daemon's own collector registry and the metrics made on it."""

    def __init__(self):
        self.collectors = CollectorRegistry(auto_describe=True)
        self.metrics: list[_Metric] = []

    def counter(self, name, help, labels=()) -> Counter:
        return Counter(self, name, help, labels)

    def gauge(self, name, help, labels=()) -> Gauge:
        return Gauge(self, name, help, labels)

    def histogram(self, name, help, buckets, labels=()) -> Histogram:
        return Histogram(self, name, help, buckets, labels)

    def render(self) -> bytes:
        return generate_latest(self.collectors)


def serve(registry: Registry, bind: str, port: int) -> ThreadingHTTPServer:
    """Serve GET /metrics (and /healthz) in a daemon thread; returns the server (``server_address``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] == "/metrics":
                body, status, ctype = registry.render(), 200, CONTENT_TYPE_LATEST
            elif self.path == "/healthz":
                body, status, ctype = b"ok\n", 200, "text/plain"
            else:
                body, status, ctype = b"not found: try /metrics\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):      # scrapes are not worth a log line each
            pass

    server = ThreadingHTTPServer((bind, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="edge-metrics", daemon=True).start()
    return server
