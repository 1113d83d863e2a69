"""Counters, gauges and histograms in the Prometheus text format (0.0.4), served by the stdlib
`http.server` on loopback. No dependency: the format is a few lines of text per metric.

The worker thread updates the values; the HTTP thread renders them under the same lock.
"""
from __future__ import annotations

import bisect
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(names, values) -> str:
    if not names:
        return ""
    esc = (str(v).replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n") for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, esc)) + "}"


def _num(v: float) -> str:
    return "+Inf" if v == math.inf else repr(float(v)) if not float(v).is_integer() else str(int(v))


class Counter:
    kind = "counter"

    def __init__(self, name, help, labels=()):
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self.values: dict[tuple, float] = {}

    def inc(self, *labels, by: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + by

    def get(self, *labels) -> float:
        return self.values.get(labels, 0.0)

    def samples(self):
        for labels, v in sorted(list(self.values.items())):     # a copy: the worker adds labels meanwhile
            yield self.name, _labels(self.label_names, labels), v


class Gauge(Counter):
    kind = "gauge"

    def set(self, *labels, value: float) -> None:
        self.values[labels] = float(value)


class Histogram:
    kind = "histogram"

    def __init__(self, name, help, buckets, labels=()):
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self.bounds = sorted(buckets)
        self.values: dict[tuple, list] = {}        # labels -> [bucket counts..., sum, count]

    def observe(self, value: float, *labels) -> None:
        row = self.values.get(labels)
        if row is None:
            row = self.values[labels] = [0] * len(self.bounds) + [0.0, 0]
        i = bisect.bisect_left(self.bounds, value)
        if i < len(self.bounds):
            row[i] += 1
        row[-2] += value
        row[-1] += 1

    def samples(self):
        for labels, row in sorted(list(self.values.items())):
            cum = 0
            for b, c in zip(self.bounds, row):
                cum += c
                yield f"{self.name}_bucket", _labels(self.label_names + ("le",), labels + (_num(b),)), cum
            yield f"{self.name}_bucket", _labels(self.label_names + ("le",), labels + ("+Inf",)), row[-1]
            yield f"{self.name}_sum", _labels(self.label_names, labels), row[-2]
            yield f"{self.name}_count", _labels(self.label_names, labels), row[-1]


class Registry:
    def __init__(self):
        self.lock = threading.Lock()
        self.metrics = []

    def add(self, metric):
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        lines = []
        with self.lock:
            for m in self.metrics:
                lines.append(f"# HELP {m.name} {m.help}")
                lines.append(f"# TYPE {m.name} {m.kind}")
                lines.extend(f"{name}{labels} {_num(v)}" for name, labels, v in m.samples())
        return "\n".join(lines) + "\n"


def serve(registry: Registry, bind: str, port: int) -> ThreadingHTTPServer:
    """Serve GET /metrics (and /healthz) in a daemon thread; returns the server (``server_address``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] == "/metrics":
                body, status, ctype = registry.render().encode(), 200, CONTENT_TYPE
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
