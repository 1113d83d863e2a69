"""`edge replay INPUT --model NAME_OR_PATH`: stream a recorded file through a bundle, sample by
sample (in block calls), and report what came out and how fast.

What it does, in order:

1. Reads INPUT with `edge.io.recordings.read_recording` (CSV, NPZ or JSON lines; ``--acc-unit``,
   ``--gyr-unit``, ``--rate-hz``, ``--gap-s``). Everything that module refuses is one line on
   stderr and exit code 2; what it accepts with a warning (a truncated last line, NaN samples, gaps)
   is said on stderr and replayed by its rules.
2. Loads the bundle (`edge.load`, ``--engine auto|numba|onnxruntime``) and takes the recording's
   channels that the bundle's metadata names as inputs (``inputs[].name``), in the bundle's order,
   converting m/s² ↔ g and rad/s ↔ deg/s where the bundle states another unit.
3. If the bundle has a ``sample_rate_hz`` and the recording's rate differs from it by more than
   0.5 %, resamples the inputs to the bundle's rate (linear interpolation, `resample`) and maps each
   output back to each input sample: the output of the latest model sample **at or before** the
   input sample's time, so no output looks ahead. The task may then carry each output over the
   remaining fraction of a model step (attitude: q ⊗ exp(ω·lag) with the input sample's own gyro
   reading, BROAD test split at 100 Hz: 1.03° without this rule, 0.75° with it).
4. Streams the fed samples through the engine in ``--chunk`` samples per `Model.block` call, one
   stream, with a progress bar on stderr. Only the engine calls are timed ("engine time",
   "µs per sample", "real-time factor"); the replay wall time covers the whole streaming stage.

Imperfect recordings, by the rules of `edge.io.recordings` (the "documented rule"):

* A sample with NaN/Inf in a channel the bundle reads, or a value outside the channel's valid range
  (`edge.validate.InputContract`: the bundle's ``inputs[].range`` or the default by unit, e.g.
  |gyr| ≤ 40 rad/s), is **not fed**; out-of-range ones are counted (``out_of_range``) and the first is
  named once on stderr. A run of such samples no
  longer than the gap threshold (``--gap-s``; 0.5 s or 5 sample periods) is skipped and the **state is held** across it.
* A **gap** (no fed sample for longer than ``--gap-s``: a long NaN run and/or a jump in ``t``)
  **resets the state** to the bundle's initial state at the first fed sample after it.
* The state guard (`edge.runtime.Model`): a state that turns NaN/Inf is reset to the initial state at
  that sample, counted (``state_resets_nonfinite``) and named on stderr.
* Every input sample gets an output row. Rows of samples that were not fed repeat the last output
  (NaN before the first one) and have ``held = 1``.

Output (``--output FILE.csv`` or ``FILE.jsonl``): one row per input sample — ``t``, the bundle's
output names, the columns its task adds (``roll_deg,pitch_deg`` for attitude), and ``held``.

Replay knows no task: the bundle's task (`edge.tasks.view`) scores, summarises and plots the run,
maps outputs back from a resampled grid causally (attitude: `edge.tasks.attitude.view.carry`), and
adds output columns; an overlay (anomaly events, ``--detector``) marks any replay.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edge.argtypes import integer, positive_float

_positive_int, _positive_float = integer(1), positive_float

if TYPE_CHECKING:          # numpy is imported when a replay runs, so that `edge --help` stays instant
    import numpy as np

RATE_TOLERANCE = 0.005            # resample when the rates differ by more than 0.5 %
DEFAULT_CHUNK = 4096
MAX_PLOT_POINTS = 20000           # per line; longer recordings are thinned for the plot only
MAX_WARNINGS_SHOWN = 8

# ------------------------------------------------------------------------------------ arguments



# spelled out here so that `edge --help` imports nothing heavy (tests check them against the modules)
ENGINE_CHOICES = ("auto", "numba", "onnxruntime")           # edge.runtime.ENGINES
ACC_UNIT_CHOICES = ("m/s^2", "g")                          # keys of edge.io.recordings.ACC_UNITS
GYR_UNIT_CHOICES = ("rad/s", "deg/s")                      # keys of edge.io.recordings.GYR_UNITS
DEFAULT_GAP_S = 0.5                                        # edge.io.recordings.DEFAULT_GAP_S


def add_arguments(p: argparse.ArgumentParser) -> None:
    ENGINES, ACC_UNITS, GYR_UNITS = ENGINE_CHOICES, ACC_UNIT_CHOICES, GYR_UNIT_CHOICES
    p.add_argument("input", help="the recording: .csv or .csv.gz (a header naming acc_x..gyr_z, optional t, "
                                 "qw..qz, movement; `,` `;` or tab), .parquet (the same columns), .npz (BROAD keys) or .jsonl")
    p.add_argument("--model", "-m", default="imu-attitude",
                   help="a bundle: an .onnx path or the name of a shipped bundle (default: imu-attitude)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="auto (Numba where it has a kernel for every op, else onnxruntime), numba or onnxruntime")
    p.add_argument("--threads", type=_positive_int, default=1, help="onnxruntime intra-op threads (default 1)")
    p.add_argument("--arith", choices=["fp32", "int8"], default="fp32",
                   help="int8: run firmware_sim's integer reference (the arithmetic of `edge export-c`) instead of "
                        "the engine; calibrated on the BROAD training trials for attitude bundles, else on this recording")
    g = p.add_argument_group("reading the recording")
    g.add_argument("--acc-unit", choices=list(ACC_UNITS), default="m/s^2",
                   help="unit of acc_* in the file (default m/s^2); converted to m/s^2 on reading")
    g.add_argument("--gyr-unit", choices=list(GYR_UNITS), default="rad/s",
                   help="unit of gyr_* in the file (default rad/s); converted to rad/s on reading")
    g.add_argument("--rate-hz", type=_positive_float, default=None,
                   help="sampling rate, needed when the file has no t column (else 1/median Δt)")
    g.add_argument("--gap-s", type=_positive_float, default=None,
                   help=f"no fed sample for longer than this is a gap: the state resets after it; shorter NaN "
                        f"runs are skipped with the state held (default {DEFAULT_GAP_S:g} s, or 5 sample periods "
                        f"for slower data)")
    o = p.add_argument_group("what comes out")
    o.add_argument("--output", "-o", default=None, metavar="FILE",
                   help="write one row per input sample to FILE.csv, FILE.parquet or FILE.jsonl: t, the bundle's outputs, "
                        "the task's columns (roll_deg,pitch_deg for attitude), held")
    o.add_argument("--plot", default=None, metavar="FILE.png",
                   help="plot (needs matplotlib): roll and pitch vs the reference and the inclination error for an "
                        "attitude bundle; each output (first 6) over time otherwise")
    o.add_argument("--json", action="store_true", help="print the summary as JSON")
    o.add_argument("--chunk", type=_positive_int, default=DEFAULT_CHUNK,
                   help=f"samples per engine block call (default {DEFAULT_CHUNK})")
    o.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it is shown on stderr when that is a terminal)")
    from edge import tasks
    for part in (*tasks.overlays(), *tasks.own_replays()):     # e.g. --detector, a dialogue's memory options
        part.add_replay_arguments(o if part in tasks.overlays() else p)


# ---------------------------------------------------------------------------------- the replay

@dataclass
class ReplayResult:
    """Everything a replay produced, sample-aligned with the recording (``N`` input samples)."""
    t: np.ndarray                   # [N] float64, the input times
    y: np.ndarray                   # [N, O] float32, the output mapped to each input sample
    held: np.ndarray                # [N] bool, rows repeating an earlier output (sample not fed)
    output_names: list
    meta: dict                      # the bundle's metadata
    fed: int                        # samples fed to the engine (model samples)
    model_samples: int              # samples on the model's grid (== N without resampling)
    resets: int                     # state resets at gap ends
    gaps: list                      # (start, end) gaps on the model's grid
    resampled_to_hz: float | None
    engine_s: float
    stream_s: float
    warmup_s: float
    chunks: int
    stats: dict = field(default_factory=dict)
    rejected: dict = field(default_factory=dict)        # reason -> input samples not fed (edge.validate.REASONS)
    notes: list = field(default_factory=list)           # one line per kind of rejected sample / state reset
    state_resets: int = 0                               # resets by the state guard (NaN/Inf state)


def replay(rec, model, *, chunk: int = DEFAULT_CHUNK, progress=None, label: str | None = None) -> ReplayResult:
    """Stream ``rec`` through ``model`` (an `edge.load` Model) by the module's rules.

    ``progress``: None, a tqdm-like object with ``update(n)``, or a callable ``progress(total=F)``
    returning one (made once the number of fed samples F is known, and closed here)."""
    import numpy as np

    from edge import tasks
    from edge.io.channels import select_inputs
    from edge.io.recordings import default_gap_s, find_gaps, resample
    from edge.runtime import InputError

    meta = model.meta
    label = label or meta.get("name") or Path(model.bundle.path).name
    n = len(rec)
    start = time.perf_counter()
    x_in = select_inputs(rec, meta, label)
    rec, x_in, rejected, notes = _screen(rec, x_in, model, meta)
    fed_in = np.all(np.isfinite(x_in), axis=1)
    gap_s = float(rec.meta.get("gap_s") or default_gap_s(rec.rate_hz))

    bundle_rate = meta.get("sample_rate_hz")
    resampled_to = None
    if bundle_rate and abs(rec.rate_hz / float(bundle_rate) - 1.0) > RATE_TOLERANCE:
        if n < 2:
            raise InputError(f"{rec.source}: a single sample at {rec.rate_hz:g} Hz cannot be resampled to the "
                             f"bundle's {float(bundle_rate):g} Hz")
        mrec = resample(rec, float(bundle_rate))
        resampled_to = float(bundle_rate)
        x_m = select_inputs(mrec, meta, label)
        t_m = mrec.t
    else:
        x_m, t_m = x_in, rec.t
    m = len(t_m)
    fed_m = np.all(np.isfinite(x_m), axis=1)
    gaps = find_gaps(t_m, fed_m, gap_s)
    fed_idx = np.flatnonzero(fed_m)
    F = len(fed_idx)
    if F == 0:
        raise InputError(f"{rec.source}: no sample has finite values in all of "
                         f"{', '.join(c['name'] for c in meta['inputs'])}: nothing to feed")

    # state resets: at the first fed sample after each gap (a leading gap needs none)
    reset_at = sorted({int(np.searchsorted(fed_idx, e)) for s, e in gaps if e < m})
    reset_at = [p for p in reset_at if 0 < p < F]
    bounds = [0, *reset_at, F]
    X = np.ascontiguousarray(x_m[fed_idx])
    C = X.shape[1]
    Y = np.empty((F, model.output_size), np.float32)

    t0 = time.perf_counter()        # untimed warm-up: the first call of an engine pays one-off costs
    model.block(X[:1].reshape(1, 1, C), model.init_state(1))
    warmup = time.perf_counter() - t0

    bar = progress(total=F) if callable(progress) else progress
    state = model.init_state(1)
    engine = 0.0
    calls = 0
    resets, guard_resets = [], 0
    try:
        view = tasks.view(meta)
        for k in range(len(bounds) - 1):
            a, b = bounds[k], bounds[k + 1]
            if k > 0:
                state[:] = model.init_state(1)
                if hasattr(view, "restart"):        # the task feeds the first samples after a reset its way
                    view.restart(model, state[0])
            settled = min(view.settling(model, state[0]), b - a) if hasattr(view, "settling") else 0
            if settled:
                t0 = time.perf_counter()
                Y[a:a + settled] = view.settle(model, X[a:a + settled], state)
                engine += time.perf_counter() - t0
                a += settled
                if bar is not None:
                    bar.update(settled)
            for c in range(a, b, chunk):
                d = min(c + chunk, b)
                xb = X[c:d].reshape(d - c, 1, C)
                t0 = time.perf_counter()
                yb = model.block(xb, state, resets)
                engine += time.perf_counter() - t0
                for r in resets:            # the guard reset the state at that sample: say where
                    k = int(fed_idx[c + r.sample])
                    notes.append(f"{rec.source}: " + r.describe("0", f"{k} (t={t_m[k]:.6f} s)"))
                guard_resets += len(resets)
                resets.clear()
                Y[c:d] = yb[:, 0, :]
                calls += 1
                if bar is not None:
                    bar.update(d - c)
    finally:
        if bar is not None and bar is not progress:
            bar.close()

    # every model sample gets the output of the latest fed sample at or before it
    pos = np.full(m, -1, np.int64)
    pos[fed_idx] = np.arange(F)
    pos = np.maximum.accumulate(pos)
    if resampled_to is None:
        j = np.arange(n)
    else:            # the latest model sample at or before each input time: no look-ahead
        j = np.clip(np.searchsorted(t_m, rec.t + 1e-9 / resampled_to, side="right") - 1, 0, m - 1)
    src = pos[j]
    y = np.full((n, model.output_size), np.nan, np.float32)
    ok = src >= 0
    y[ok] = Y[src[ok]]
    held = ~fed_in | ~fed_m[j]
    if resampled_to is not None and hasattr(view, "carry"):
        view.carry(y, meta, x_in, rec.t - t_m[j], ok & ~held)
    stream_s = time.perf_counter() - start
    return ReplayResult(t=rec.t, y=y, held=held, output_names=[str(o["name"]) for o in meta["outputs"]],
                        meta=meta, fed=F, model_samples=m, resets=len(reset_at),
                        gaps=gaps, resampled_to_hz=resampled_to, engine_s=engine, stream_s=stream_s,
                        warmup_s=warmup, chunks=calls, rejected=rejected, notes=notes, state_resets=guard_resets)


def nonfinite_outputs(res: ReplayResult) -> int:
    """Rows after the first output whose output is NaN/Inf although their sample was fed: failures
    that a score must not skip (every task's score is refused when there are any)."""
    import numpy as np
    finite = np.all(np.isfinite(res.y), axis=1)
    if not finite.any():
        return int((~res.held).sum())
    after = np.arange(len(finite)) >= int(np.argmax(finite))
    return int((after & ~res.held & ~finite).sum())


def _screen(rec, x_in, model, meta):
    """The input contract (`edge.validate`): samples with a value outside its channel's valid range are
    blanked (NaN) in the inputs and in the recording (so resampling and the gap rule treat them as
    missing). Returns (rec, x_in, counts by reason, [one line naming the first out-of-range sample])."""
    import dataclasses

    import numpy as np
    screened = model.contract.screen(x_in, lambda idx: f"sample {int(idx[0])} (t={rec.t[idx[0]]:.6f} s)")
    notes = []
    if screened.counts["out_of_range"]:
        bad = ~screened.fed
        x_in = x_in.copy()
        x_in[bad] = np.nan
        cols = [rec.channels.index(c) for c in rec.channels
                if c.lower() in {str(i["name"]).lower() for i in meta["inputs"]}]
        x = rec.x.copy()
        x[np.ix_(np.flatnonzero(bad), cols)] = np.nan
        rec = dataclasses.replace(rec, x=x)
        notes.append(f"{rec.source}: {screened.first['out_of_range']}; {screened.counts['out_of_range']} sample(s) "
                     f"out of range are not fed, the state is held (out_of_range)")
    return rec, x_in, screened.counts, notes


def output_table(res: ReplayResult):
    """(column names, [N, K] float64 table) of the output file."""
    import numpy as np
    cols = [res.t[:, None], res.y.astype(np.float64)]
    names = ["t", *res.output_names]
    from edge import tasks
    view = tasks.view(res.meta)
    for name, col in (view.extra_columns(res) if hasattr(view, "extra_columns") else ()):
        cols.append(np.asarray(col, np.float64)[:, None])
        names.append(name)
    cols.append(res.held[:, None].astype(np.float64))
    names.append("held")
    return names, np.concatenate(cols, axis=1)


OUTPUT_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")
WRITE_ROWS = 1 << 16              # rows per batch handed to pyarrow's writers


def output_arrow(res: ReplayResult):
    """The output table as a pyarrow Table: ``t``, the bundle's outputs (the engine's float32 values,
    written as the float64 numbers they are, so a reader recomputes the task's columns exactly),
    the task's columns, ``held`` as 0/1."""
    import numpy as np
    import pyarrow as pa

    from edge import tasks
    view = tasks.view(res.meta)
    cols = {"t": pa.array(res.t, pa.float64())}
    for k, name in enumerate(res.output_names):
        cols[name] = pa.array(res.y[:, k].astype(np.float64), pa.float64())     # exact: float32 -> float64
    for name, col in (view.extra_columns(res) if hasattr(view, "extra_columns") else ()):
        cols[name] = pa.array(np.asarray(col, np.float64), pa.float64())
    cols["held"] = pa.array(res.held.astype(np.uint8), pa.uint8())
    return pa.table(cols)


def write_output(res: ReplayResult, path: Path) -> list:
    """Write the per-sample output as CSV (pyarrow's writer), Parquet or JSON lines, chosen by the
    extension, atomically (`edge.io.atomic`); returns the column names."""
    import numpy as np

    from edge.io.atomic import atomic_open, atomic_write
    name = path.name.lower()
    if name.endswith((".csv", ".parquet")):
        table = output_arrow(res)
        with atomic_open(path, "wb", encoding=None) as fh:
            if name.endswith(".csv"):
                import pyarrow.csv as pacsv
                fh.write((",".join(table.column_names) + "\n").encode())     # pyarrow would quote the names
                pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=False, quoting_style="none",
                                                              batch_size=WRITE_ROWS))
            else:
                import pyarrow.parquet as pq
                pq.write_table(table, fh, row_group_size=WRITE_ROWS)
        return table.column_names
    names, table = output_table(res)
    n_out = len(res.output_names)
    extra = len(names) - 2 - n_out         # the task's columns
    fmts = ["%.6f"] + ["%.9g"] * n_out + ["%.6f"] * extra
    keys = [json.dumps(nm).replace("%", "%%") for nm in names]
    tmpl = "{" + ", ".join(f"{k}: {f}" for k, f in zip(keys[:-1], fmts)) + f", {keys[-1]}: %s}}"
    held = np.where(res.held, "true", "false")
    rows = table[:, :-1].tolist()
    text = "\n".join(tmpl % (*r, h) for r, h in zip(rows, held.tolist())) + "\n"
    if not np.all(np.isfinite(table)):
        text = re.sub(r"(?<=: )-?(?:nan|inf)(?=[,}])", "null", text)
    atomic_write(path, text)
    return names


# ------------------------------------------------------------------------------------- metrics

# ---------------------------------------------------------------------------------------- plot

def thinning(res):
    """(step, t from the first sample) that draw at most MAX_PLOT_POINTS points per line."""
    n = len(res.t)
    step = max(1, math.ceil(n / MAX_PLOT_POINTS))
    return step, res.t[::step] - (res.t[0] if n else 0.0)


def new_figure(rows: int, height: float):
    """A figure of ``rows`` stacked axes sharing time (matplotlib's Agg canvas; no pyplot, no global
    backend change)."""
    import numpy as np
    try:
        from matplotlib.figure import Figure
    except ImportError:
        from edge.runtime import InputError
        raise InputError("--plot needs matplotlib: pip install 'edge[plot]' (or matplotlib)") from None
    fig = Figure(figsize=(11, height * rows + 0.6), dpi=110, layout="constrained")
    return fig, np.atleast_1d(fig.subplots(rows, 1, sharex=True))


def shade_runs(ax, t, mask, color, label) -> None:
    """Shade the runs of samples where ``mask`` is True (times relative to ``t[0]``)."""
    import numpy as np
    if mask is None or not mask.any():
        return
    d = np.diff(np.r_[0, mask.astype(np.int8), 0])
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    for k, (a, b) in enumerate(zip(starts, ends)):
        ax.axvspan(t[a] - t[0], t[b - 1] - t[0], color=color, alpha=0.12, lw=0, label=label if k == 0 else None)


def plot(rec, res: ReplayResult, path: Path, title: str) -> None:
    """Each output (the first 6) over time, for a bundle whose task draws nothing of its own."""
    step, t = thinning(res)
    k = min(6, len(res.output_names))
    fig, axes = new_figure(k, 1.7)
    for i, ax in enumerate(axes):
        ax.plot(t, res.y[::step, i], lw=0.9, color=f"C{i}")
        ax.set_ylabel(res.output_names[i])
        shade_runs(ax, res.t, res.held, "tab:red", "not fed (held)")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time [s]")
    if len(res.output_names) > k:
        title += f" (first {k} of {len(res.output_names)} outputs)"
    fig.suptitle(title, fontsize=11)
    fig.savefig(path)


# ------------------------------------------------------------------------------------- command

def _warn(lines) -> None:
    for w in lines[:MAX_WARNINGS_SHOWN]:
        print(f"edge replay: warning: {w}", file=sys.stderr)
    if len(lines) > MAX_WARNINGS_SHOWN:
        print(f"edge replay: ... and {len(lines) - MAX_WARNINGS_SHOWN} more warnings", file=sys.stderr)


def _fmt_s(s: float) -> str:
    return f"{s * 1e3:.0f} ms" if s < 1 else f"{s:.2f} s"


def run(args) -> int:
    from edge import tasks
    for own in tasks.own_replays():     # e.g. a decoder LM: the file is a dialogue (JSON lines of turns)
        if own.claims(args.model):
            return own.run_replay(args)
    import warnings

    from edge import load
    from edge.io.recordings import RecordingWarning, read_recording
    from edge.runtime import InputError

    out_path = Path(args.output) if args.output else None
    if out_path is not None and not out_path.name.lower().endswith(OUTPUT_SUFFIXES):
        raise InputError(f"--output {args.output}: the name must end in .csv, .parquet or .jsonl")
    plot_path = Path(args.plot) if args.plot else None
    for p in (out_path, plot_path):
        if p is not None and not p.resolve().parent.is_dir():
            raise InputError(f"cannot write {p}: folder {p.parent} does not exist")

    total0 = time.perf_counter()
    t0 = time.perf_counter()
    if args.arith == "int8":
        from edge.firmware_sim.intarith import load_int8
        model = load_int8(args.model, fallback=args.input)
    else:
        model = load(args.model, engine=args.engine, threads=args.threads)
    load_s = time.perf_counter() - t0
    meta = model.meta
    label = meta.get("name") or model.bundle.path
    view = tasks.view(meta)
    overlay = next((o for o in tasks.overlays() if o.wanted(args)), None)
    if overlay:
        overlay.check(args)

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecordingWarning)
        rec = read_recording(args.input, acc_unit=args.acc_unit, gyr_unit=args.gyr_unit, rate_hz=args.rate_hz,
                             gap_s=args.gap_s, channels=[str(c["name"]) for c in meta["inputs"]])
    read_s = time.perf_counter() - t0
    _warn(rec.warnings)

    progress = None
    if not args.no_progress:            # shown when stderr is a terminal (tqdm's disable=None)
        from tqdm import tqdm

        def progress(total):
            return tqdm(total=total, unit="sample", unit_scale=True, file=sys.stderr, desc="replay",
                        leave=False, disable=None, dynamic_ncols=True)
    res = replay(rec, model, chunk=args.chunk, progress=progress, label=label)
    _warn(res.notes)

    nonfinite = nonfinite_outputs(res)
    task_metric = view.metric(rec, res, meta) if view and not nonfinite else None     # a broken run is not scored
    marked = overlay.metric(rec, res, meta, args) if overlay else None
    write_s = plot_s = 0.0
    columns = None
    try:
        if out_path is not None:
            t0 = time.perf_counter()
            columns = write_output(res, out_path)
            write_s = time.perf_counter() - t0
        if plot_path is not None:
            t0 = time.perf_counter()
            title = f"{Path(args.input).name} · {meta.get('name') or Path(model.bundle.path).name} on {model.engine}"
            if marked:
                overlay.plot(rec, res, plot_path, title, marked, meta)
            elif view:
                view.plot(rec, res, plot_path, title, task_metric, meta)
            else:
                plot(rec, res, plot_path, title)
            plot_s = time.perf_counter() - t0
    except OSError as e:
        print(f"edge replay: cannot write {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    total_s = time.perf_counter() - total0

    duration = rec.duration_s
    held_n = int(res.held.sum())
    summary = {
        "input": str(args.input),
        "samples": len(rec),
        "duration_s": duration,
        "rate_hz": rec.rate_hz,
        "channels": [c["name"] for c in meta["inputs"]],
        "reference": rec.reference is not None,
        "model": label,
        "bundle": model.bundle.path,
        "task": meta.get("task"),
        "bundle_rate_hz": meta.get("sample_rate_hz"),
        "engine": model.engine,
        "engine_reason": model.reason,
        "resampled": res.resampled_to_hz is not None,
        "resampling": None if res.resampled_to_hz is None else {
            "from_hz": rec.rate_hz, "to_hz": res.resampled_to_hz, "method": "linear",
            "model_samples": res.model_samples,
            "mapping": "each input sample gets the output of the latest model sample at or before its time"},
        "gaps": len(res.gaps),
        "resets": res.resets,
        "held_samples": held_n,
        "fed_samples": res.fed,
        "not_finite": res.rejected.get("not_finite", 0),
        "out_of_range": res.rejected.get("out_of_range", 0),
        "state_resets_nonfinite": res.state_resets,
        "nonfinite_outputs": nonfinite,
        "warnings": [*rec.warnings, *res.notes],
        "chunk": args.chunk,
        "engine_calls": res.chunks,
        "wall_s": total_s,
        "replay_s": res.stream_s,
        "read_s": read_s,
        "load_s": load_s,
        "warmup_s": res.warmup_s,
        "write_s": write_s,
        "plot_s": plot_s,
        "engine_s": res.engine_s,
        "us_per_sample": res.engine_s / res.fed * 1e6,
        "realtime_factor": duration / res.engine_s if res.engine_s > 0 else None,
        **(view.summary_fields(task_metric) if hasattr(view, "summary_fields") else {}),
        "task_metric": task_metric,
        **({overlay.SUMMARY_KEY: marked} if overlay else {}),
        "output": str(out_path) if out_path else None,
        "columns": columns,
        "plot": str(plot_path) if plot_path else None,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(_text_summary(summary, rec, view))
        if marked:
            print("\n".join(overlay.summary_lines(marked)))
    return 0


def _text_summary(s: dict, rec, view=None) -> str:
    lines = []
    extra = []
    if rec.reference is not None:
        extra.append("reference qw..qz")
    if rec.scored is not None:
        extra.append(f"{int(rec.scored.sum()):,} scored samples")
    lines.append(f"input       {s['input']}: {s['samples']:,} samples, {s['duration_s']:.1f} s at {s['rate_hz']:.6g} Hz"
                 + (f" ({', '.join(extra)})" if extra else ""))
    lines.append(f"model       {s['model']} ({s['task']}) on {s['engine']} — {s['engine_reason']}")
    if s["resampling"]:
        r = s["resampling"]
        lines.append(f"resampling  {r['from_hz']:.6g} Hz → {r['to_hz']:.6g} Hz (the bundle's rate; linear), "
                     f"{r['model_samples']:,} model samples; outputs mapped back to every input sample "
                     f"(latest model sample at or before it: no look-ahead)")
    else:
        rate = s["bundle_rate_hz"]
        lines.append("resampling  none: " + (f"the recording is at the bundle's rate ({rate:.6g} Hz)" if rate
                                             else "the bundle takes any rate"))
    if s["gaps"] or s["held_samples"]:
        lines.append(f"gaps        {s['gaps']} gap(s), state reset {s['resets']} time(s); "
                     f"{s['held_samples']:,} sample(s) not fed (rows repeat the last output, held=1)")
    else:
        lines.append("gaps        none; every sample fed")
    if s["out_of_range"] or s["state_resets_nonfinite"]:
        lines.append(f"rejected    {s['out_of_range']:,} sample(s) outside their channel's valid range (out_of_range: "
                     f"not fed, state held); state reset {s['state_resets_nonfinite']} time(s) after turning NaN/Inf")
    lines.append(f"replay      {_fmt_s(s['replay_s'])} wall for the stream "
                 f"(total {_fmt_s(s['wall_s'])}: read {_fmt_s(s['read_s'])}, load {_fmt_s(s['load_s'])}"
                 + (f", write {_fmt_s(s['write_s'])}" if s["output"] else "")
                 + (f", plot {_fmt_s(s['plot_s'])}" if s["plot"] else "") + ")")
    rtf = s["realtime_factor"]
    lines.append(f"engine      {_fmt_s(s['engine_s'])} for {s['fed_samples']:,} samples in {s['engine_calls']} "
                 f"block call(s) = {s['us_per_sample']:.2f} µs per sample; real-time factor "
                 + (f"{rtf:,.0f}×" if rtf is not None else "-"))
    if s["nonfinite_outputs"]:
        lines.append(f"score       refused: {s['nonfinite_outputs']:,} fed sample(s) gave NaN/Inf outputs (a run with "
                     "failed outputs is not scored)")
    elif view and s["task_metric"]:
        lines.extend(view.summary_lines(s["task_metric"]))
    if s["output"]:
        lines.append(f"output      {s['output']}: {s['samples']:,} rows ({','.join(s['columns'])})")
    if s["plot"]:
        lines.append(f"plot        {s['plot']}")
    return "\n".join(lines)
