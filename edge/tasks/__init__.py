"""The task registry: what a bundle's ``task`` metadata names -> the package that knows that task.

Replay, the daemon and the command line find a task's hooks here and import no task package
themselves; a task package imports the runtime (``edge.bundle``, ``edge.runtime``, ``edge.engine``,
``edge.io``, ``edge.replay``), never another task. Each package may have:

* ``view``: how a replay of its bundles is scored, summarised and plotted —
  ``metric(rec, res, meta) -> dict | None``, ``summary_lines(metric) -> [str]``,
  ``plot(rec, res, path, title, metric, meta)``, and optionally ``extra_columns(res)`` (more output
  columns), ``summary_fields(metric)`` (top-level summary keys), ``carry(y, meta, x, lag_s, rows)``
  (a causal correction of outputs mapped back from a resampled grid), and ``restart(model, row)``,
  ``settling(model, row) -> n``, ``settle(model, x, state) -> y`` (how a stream is fed for a while
  after a state reset: attitude re-levels from the accelerometer's running mean; `edge.replay` and
  the daemon call them at every reset);
* ``overlay``: something marked on any replay when asked (``add_replay_arguments(parser)``,
  ``wanted(args)``, ``check(args)``, ``metric(rec, res, meta, args)``, ``summary_lines``, ``plot``);
* ``cli``: a task that replays its own kind of file (``claims(model) -> bool``, ``run_replay(args)``).
"""
from __future__ import annotations

import importlib
from types import ModuleType

# bundle ``task`` -> package under edge.tasks
PACKAGES = {
    "attitude": "attitude",
    "forecast": "forecast",
    "classification": "classify",
    "anomaly": "anomaly",
    "dialogue": "dialogue",
}
OVERLAYS = ("anomaly",)          # packages whose overlay any replay can ask for
OWN_REPLAY = ("dialogue",)       # packages that replay a file kind of their own
QUAT_NAMES = ("qw", "qx", "qy", "qz")


def _part(package: str, part: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"edge.tasks.{package}.{part}")
    except ModuleNotFoundError as e:
        if e.name == f"edge.tasks.{package}.{part}":
            return None
        raise


def task_of(meta: dict) -> str | None:
    """The task of a bundle: its ``task`` metadata, or ``attitude`` for any bundle whose outputs are
    named qw, qx, qy, qz (an orientation quaternion is scored the same way whoever made it)."""
    task = str(meta.get("task") or "")
    if task in PACKAGES:
        return task
    names = {str(o.get("name", "")).lower() for o in meta.get("outputs", ())}
    return "attitude" if set(QUAT_NAMES) <= names else None


def view(meta: dict) -> ModuleType | None:
    """The replay view of the bundle's task, or None (replay then draws its outputs generically)."""
    task = task_of(meta)
    return _part(PACKAGES[task], "view") if task else None


def overlays() -> list[ModuleType]:
    return [m for m in (_part(p, "overlay") for p in OVERLAYS) if m is not None]


def own_replays() -> list[ModuleType]:
    return [m for m in (_part(p, "cli") for p in OWN_REPLAY) if m is not None]
