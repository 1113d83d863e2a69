"""Score activity-classification bundles on the data they never saw, through the runtime (no torch):
what ships is what is measured.

    edge eval har-watch                                  # the shipped bundles
    edge eval har-watch --bundles runs/har/*.onnx        # e.g. every fold of a grouped k-fold

A bundle emits class probabilities at every sample (`edge train har-watch`). For each recording:
* **full-length accuracy**: the argmax at the last sample;
* **early-decision curve**: the accuracy of the argmax after a fraction f of the recording
  (sample ceil(f·T) − 1, so f = 1 is the last sample);
* **spikes per step** (spiking bundles): the LIF outputs of the bundle's own step program, counted
  by running that program with every LIF output collected as its output.

Watch bundles name their held-out subjects in their metadata; each is scored on exactly those
recordings. Several bundles of one model kind whose held-out subjects cover every subject once make
a grouped k-fold: each recording is then predicted by the one bundle that did not train on it.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from edge.bundle import BUNDLE_DIR, BundleError, read_bundle
from edge.io.atomic import atomic_write
from edge.runtime import load
from edge.tasks.classify.data import DatasetError, Recordings, load_basic_motions, load_watch

FRACTIONS = tuple(round(0.05 * i, 2) for i in range(1, 21))
BURNS_2018 = 0.889  # CRNN, subject-stratified CV, 20 subjects (Burns et al. 2018, arXiv:1802.01489)
SHIPPED = ("har-watch", "har-watch-spiking")


def stream_probabilities(model, data: Recordings) -> list[np.ndarray]:
    """Every recording as one stream of a single block call: x [T_max, S, C], zero-padded after each
    recording's end (the model is causal, so padding never reaches an earlier output)."""
    T = max(len(x) for x in data.x)
    xs = np.zeros((T, len(data), model.input_size), np.float32)
    for s, x in enumerate(data.x):
        xs[:len(x), s] = x
        xs[len(x):, s] = x[-1]  # hold the last sample: a finite, in-range pad
    y = model.block(xs, model.init_state(len(data)))
    return [y[:len(x), s].copy() for s, x in enumerate(data.x)]


def decision_index(length: int, fraction: float) -> int:
    """The sample at which a fraction of a recording of `length` samples has been seen."""
    return max(0, math.ceil(fraction * length - 1e-9) - 1)


def early_decision_curve(probs, labels, fractions=FRACTIONS) -> np.ndarray:
    """Accuracy of the argmax after each fraction of every recording: (len(fractions),)."""
    labels = np.asarray(labels)
    return np.array([np.mean([p[decision_index(len(p), f)].argmax() == y for p, y in zip(probs, labels)])
                     for f in fractions])


def spike_probe(meta: dict) -> dict | None:
    """The bundle's program with its output replaced by the concatenation of every LIF output, or
    None without LIF neurons. Run on the same weights and state, it emits the spike vector of the step."""
    lifs = [op["out"] for op in meta["program"]["ops"] if op["op"] == "lif"]
    if not lifs:
        return None
    program = dict(meta["program"])
    registers = {**program["registers"], "spikes": lif_neurons(meta)}
    program.update(registers=registers, output="spikes",
                   ops=program["ops"] + [{"op": "concat", "ins": lifs, "out": "spikes"}])
    return program


def lif_neurons(meta: dict) -> int:
    return sum(meta["program"]["registers"][op["out"]] for op in meta["program"]["ops"] if op["op"] == "lif")


def spike_counts(model, data: Recordings) -> np.ndarray | None:
    """Spikes per step of each recording ([N] over every sample of every recording), or None."""
    from edge.engine.numba_engine import NumbaExecutor
    program = spike_probe(model.meta)
    if program is None:
        return None
    probe = NumbaExecutor(program, model.bundle.weights, model.meta["state"])
    mean, std = (np.asarray(model.meta["normalisation"][k], np.float32) for k in ("mean", "std"))
    T = max(len(x) for x in data.x)
    xs = np.zeros((T, len(data), model.input_size), np.float32)
    for s, x in enumerate(data.x):
        xs[:len(x), s] = (x - mean) / std
    s = probe.block(xs, probe.init_state(len(data))).sum(-1)  # (T, S)
    return np.concatenate([s[:len(x), i] for i, x in enumerate(data.x)])


def score_bundle(path, data: Recordings, engine: str = "auto") -> dict:
    """One bundle on the recordings it did not train on: the watch subjects its metadata names, or
    BasicMotions' test split."""
    model = load(path, engine=engine)
    metrics = model.meta.get("metrics") or {}
    held = metrics.get("held_out_subjects")
    if held:
        index = np.flatnonzero(np.isin(data.subject, held))
        data = data.subset(index)
    else:
        index = np.arange(len(data))
    outputs = [o["name"] for o in model.meta["outputs"]]
    if outputs != list(data.classes):
        raise BundleError(path, f"outputs {outputs} are not the classes {list(data.classes)} of {data.name}")
    start = time.perf_counter()
    probs = stream_probabilities(model, data)
    seconds = time.perf_counter() - start
    spikes = spike_counts(model, data)
    pred = np.array([p[-1].argmax() for p in probs])
    config = (model.meta.get("model") or {}).get("config") or {}
    return {"bundle": str(path), "name": model.meta.get("name"), "model": config.get("model"),
            "of_folds": config.get("folds"), "engine": model.engine, "held_out_subjects": held, "index": index,
            "y": data.y, "pred": pred,
            "subject": data.subject, "accuracy": float(np.mean(pred == data.y)),
            "curve": early_decision_curve(probs, data.y), "samples": int(sum(len(x) for x in data.x)),
            "us_per_sample": 1e6 * seconds / sum(len(x) for x in data.x),
            "spikes_per_step": None if spikes is None else float(spikes.mean()),
            "neurons": lif_neurons(model.meta),
            "classes": list(data.classes), "provenance": model.meta.get("provenance") or {}}


def pooled(results: list[dict]) -> dict | None:
    """Bundles of one kind with disjoint held-out subjects (the folds of a grouped k-fold): every
    recording scored once, by the bundle that did not train on its subject."""
    subjects = [s for r in results for s in (r["held_out_subjects"] or [])]
    if len(results) < 2 or len(subjects) != len(set(subjects)):
        return None
    y = np.concatenate([r["y"] for r in results])
    pred = np.concatenate([r["pred"] for r in results])
    subject = np.concatenate([r["subject"] for r in results])
    weights = np.array([len(r["y"]) for r in results], float)
    curve = np.average(np.stack([r["curve"] for r in results]), axis=0, weights=weights)
    per_subject = {int(s): float(np.mean(pred[subject == s] == y[subject == s])) for s in sorted(set(subject.tolist()))}
    spikes = [r["spikes_per_step"] for r in results]
    k = results[0]["of_folds"]
    name = f"grouped {k}-fold" if len(results) == k else f"{len(results)} of the {k} folds of a grouped {k}-fold"
    return {"name": name, "subjects": sorted(subjects), "recordings": len(y),
            "accuracy": float(np.mean(pred == y)), "curve": curve, "per_subject": per_subject,
            "confusion": confusion(y, pred, len(results[0]["classes"])),
            "spikes_per_step": None if None in spikes else
            float(np.average(spikes, weights=[r["samples"] for r in results]))}


def confusion(y, pred, classes: int) -> np.ndarray:
    m = np.zeros((classes, classes), np.int64)
    np.add.at(m, (np.asarray(y), np.asarray(pred)), 1)
    return m


def plot_curves(panels: dict, path, reference: float | None = BURNS_2018) -> None:
    """Accuracy vs fraction of the recording seen: one panel per data set ({title: {label: curve}}),
    one line per model; the published full-length reference on the watch panel (Figure, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6 * len(panels), 4.2))
    FigureCanvasAgg(fig)
    for ax, (title, curves) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels.items()):
        for label, curve in curves.items():
            ax.plot(np.array(FRACTIONS) * 100, np.asarray(curve) * 100, marker="o", ms=3, label=label,
                    ls="-" if "fold" in label or not title.startswith("watch") else "--")
        if reference is not None and title.startswith("watch"):
            ax.axhline(reference * 100, color="grey", ls="--", lw=1,
                       label=f"Burns et al. 2018, unseen subjects, full length ({reference:.1%})")
        ax.set_xlabel("fraction of the recording seen (%)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_xlim(0, 100)
        ax.grid(alpha=0.3)
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def _spikes(r) -> str:
    return "—" if r["spikes_per_step"] is None else f"{r['spikes_per_step']:.1f} of {r['neurons']}"


def report(watch: dict, basic: list[dict], plot_name: str, command: str) -> str:
    """docs/har-results.md: per bundle, per k-fold, per subject, confusion, early-decision table."""
    at = {f: FRACTIONS.index(f) for f in (0.1, 0.25, 0.5, 0.75)}
    head = "| model | bundle | held-out subjects | recordings | full length | " + \
           " | ".join(f"{int(f * 100)} % seen" for f in at) + " | spikes per step (of LIF neurons) |"
    lines = ["# Activity classification from a 6-axis smartwatch IMU: results", "",
             f"Regenerate with `{command}` (runs the exported bundles on the runtime; no torch).", "",
             "Data: seglearn 1.2.5's watch data (140 recordings, 7 shoulder exercises, 10 subjects, 50 Hz; "
             "BSD-3, Burns et al. 2018) and aeon 1.6.0's BasicMotions (its own train/test split). "
             "Accuracy is per recording: the argmax of the bundle's probabilities after the whole recording "
             "(full length) or after a fraction of it (early decision). Held-out subjects were never read "
             "while training. Reference: Burns et al. 2018 report 88.9 % on unseen subjects (CRNN, "
             "subject-stratified CV, 20 subjects; the wheel holds 10 of them, so the comparison is approximate).",
             "", "## Watch data, leave subjects out", "", head, "|" + "---|" * (6 + len(at))]
    for kind, rows in watch.items():
        for r in rows:
            lines.append(f"| {kind} | `{Path(r['bundle']).name}` | {', '.join(map(str, r['held_out_subjects']))} | "
                         f"{len(r['y'])} | **{_pct(r['accuracy'])}** | "
                         + " | ".join(_pct(r["curve"][i]) for i in at.values())
                         + f" | {_spikes(r)} |")
    for kind, rows in watch.items():
        p = pooled(rows)
        if p is None:
            continue
        verdict = "meets" if p["accuracy"] >= BURNS_2018 else "misses"
        lines += ["", f"### {kind}: {p['name']}, subjects {', '.join(map(str, p['subjects']))}", "",
                  f"Every recording predicted by the bundle that did not train on its subject: **{_pct(p['accuracy'])}** "
                  f"at full length over {p['recordings']} recordings ({verdict} the 88.9 % target)."
                  + ("" if p["spikes_per_step"] is None else f" Spikes per step: {p['spikes_per_step']:.1f}."), "",
                  "| subject | " + " | ".join(map(str, p["per_subject"])) + " |",
                  "|---|" + "---|" * len(p["per_subject"]),
                  "| accuracy | " + " | ".join(_pct(v) for v in p["per_subject"].values()) + " |", "",
                  "Confusion (rows: true, columns: predicted):", "",
                  "| | " + " | ".join(rows[0]["classes"]) + " |", "|---|" + "---|" * len(rows[0]["classes"])]
        lines += [f"| {c} | " + " | ".join(map(str, row)) + " |" for c, row in zip(rows[0]["classes"], p["confusion"])]
        lines += ["", "Early decision (accuracy after a fraction of each recording):", "",
                  "| seen | " + " | ".join(f"{int(f * 100)} %" for f in FRACTIONS[1::2]) + " |",
                  "|---|" + "---|" * len(FRACTIONS[1::2]),
                  "| accuracy | " + " | ".join(_pct(v) for v in p["curve"][1::2]) + " |"]
    lines += ["", f"![early-decision curve]({plot_name})", ""]
    if basic:
        lines += ["## BasicMotions (train 40 / test 40, 10 Hz)", "", head.replace("held-out subjects", "split"),
                  "|" + "---|" * (6 + len(at))]
        for r in basic:
            lines.append(f"| {r['model']} | `{Path(r['bundle']).name}` | test | {len(r['y'])} | **{_pct(r['accuracy'])}** | "
                         + " | ".join(_pct(r["curve"][i]) for i in at.values())
                         + f" | {_spikes(r)} |")
        lines += ["", "BasicMotions is saturated (ROCKET and HIVE-COTE reach 100 %); with 40 test recordings one "
                      "error costs 2.5 points.", ""]
    lines += ["## How the bundles were trained", "",
              "Each bundle records its training command and wall time (one torch thread; the machine's 2 cores "
              "were shared with other jobs, so these are upper bounds):", "",
              "| bundle | command | wall |", "|---|---|---|"]
    for r in [r for rows in watch.values() for r in rows] + basic:
        p = r["provenance"]
        wall = p.get("train_wall_s")
        lines.append(f"| `{Path(r['bundle']).name}` | `{p.get('command', '?')}` | "
                     f"{'?' if wall is None else f'{wall / 60:.1f} min'} |")
    return "\n".join(lines) + "\n"


def add_arguments(p) -> None:
    p.add_argument("--bundles", nargs="+", metavar="ONNX",
                   help="har-watch: bundles to score (default: the shipped har-watch and har-watch-spiking)")
    p.add_argument("--out", default="docs", metavar="DIR",
                   help="har-watch: folder for har-results.md and har-early-decision.png (default docs)")


def run(args) -> int:
    paths = args.bundles or [BUNDLE_DIR / f"{n}.onnx" for n in SHIPPED if (BUNDLE_DIR / f"{n}.onnx").exists()]
    if not paths:
        print("edge eval har-watch: no bundles (train one: edge train har-watch)", file=sys.stderr)
        return 2
    try:
        watch_data, basic_data = load_watch(), load_basic_motions("test")
    except DatasetError as e:
        print(f"edge eval har-watch: {e}", file=sys.stderr)
        return 2
    watch, basic = {}, []
    for path in paths:
        dataset = (read_bundle(path).meta.get("metrics") or {}).get("dataset")
        r = score_bundle(path, basic_data if dataset == "BasicMotions" else watch_data, args.engine)
        if dataset == "BasicMotions":
            basic.append(r)
        else:
            watch.setdefault(r["model"], []).append(r)
        held = "BasicMotions test" if dataset == "BasicMotions" else f"subjects {r['held_out_subjects']}"
        print(f"{Path(path).name}: {held}: full length {r['accuracy']:.3f}, half seen "
              f"{r['curve'][FRACTIONS.index(0.5)]:.3f}, {r['us_per_sample']:.2f} µs/sample on {r['engine']}"
              + ("" if r["spikes_per_step"] is None else f", {r['spikes_per_step']:.1f} spikes/step"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves = {}
    for kind, rows in watch.items():  # a kind's k-fold curve, or each of its bundles without one
        p = pooled(rows)
        if p:
            curves[f"{kind}, {p['name']}"] = p["curve"]
            print(f"{kind}: {p['name']}: accuracy {p['accuracy']:.3f} over {p['recordings']} recordings")
        else:
            curves.update({f"{kind}, subjects {', '.join(map(str, r['held_out_subjects']))}": r["curve"] for r in rows})
    panels = {"watch: held-out subjects": curves} if curves else {}
    if basic:
        panels["BasicMotions: test split"] = {r["model"]: r["curve"] for r in basic}
    plot_curves(panels, out / "har-early-decision.png")
    command = "edge eval har-watch" + ("" if args.bundles is None else " --bundles " + " ".join(map(str, args.bundles)))
    atomic_write(out / "har-results.md", report(watch, basic, "har-early-decision.png", command))
    print(f"wrote {out / 'har-results.md'} and {out / 'har-early-decision.png'}")
    return 0
