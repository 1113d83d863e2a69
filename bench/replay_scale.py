"""`edge replay` at length: whole-process time and peak RSS per case, one JSON line each (not a test).

    python bench/replay_scale.py                      # the 60 s demo; 1 h of 285.7 Hz IMU as CSV, Parquet, NPZ
    python bench/replay_scale.py --hours 1 6          # also 6 h (peak RSS against the hour's)
    python bench/replay_scale.py --workdir DIR        # where the generated recordings go (default: a temp folder)

The long recordings are the demo minute (examples/imu-demo.csv, BROAD, CC BY 4.0) repeated with a
continuous ``t``, written once per run under a temporary folder and deleted afterwards. Each case
is one `edge replay ... --json --no-progress` process (numba engine, imu-attitude); its wall time is
measured around the process, its peak RSS from ``os.wait4``, the engine's share from its summary.
Beside them, in this process: VQF's C++ ``updateBatch`` on the same hour of samples (the peer the
issue names), so the ratios are from one run on one machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "imu-demo.csv"


def repeated(hours: float):
    """The demo minute repeated to ``hours`` (t continuous, one period after the last sample)."""
    from edge.io.recordings import Recording, read_recording
    rec = read_recording(DEMO)
    n = len(rec)
    period = 1.0 / rec.rate_hz
    reps = int(np.ceil(hours * 3600.0 / (rec.duration_s + period)))
    t = (np.arange(n * reps) * period)
    return Recording(t=t, channels=rec.channels, x=np.tile(rec.x, (reps, 1)), units=rec.units, rate_hz=rec.rate_hz,
                     source="bench", reference=np.tile(rec.reference, (reps, 1)), scored=np.tile(rec.scored, reps),
                     meta=dict(rec.meta))


def write_all(rec, folder: Path, stem: str) -> dict:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    # channels and reference as float32, the way a recorder writes them (shortest round-trip digits)
    cols = {"t": rec.t, **{c: rec.x[:, k] for k, c in enumerate(rec.channels)},
            **{q: rec.reference[:, k].astype(np.float32) for k, q in enumerate(("qw", "qx", "qy", "qz"))},
            "movement": rec.scored.astype(np.int8)}
    table = pa.table(cols)
    paths = {"csv": folder / f"{stem}.csv", "parquet": folder / f"{stem}.parquet", "npz": folder / f"{stem}.npz"}
    with open(paths["csv"], "wb") as fh:
        fh.write((",".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    pq.write_table(table, paths["parquet"], row_group_size=1 << 16)
    np.savez(paths["npz"], acc=rec.x[:, :3], gyr=rec.x[:, 3:6], quat=rec.reference, movement=rec.scored,
             t=rec.t, sampling_rate=rec.rate_hz)
    return paths


# the child reports its own peak RSS (ru_maxrss of RUSAGE_SELF) on its last stderr line
CHILD = ("import resource, sys; from edge.cli import main; rc = main(sys.argv[1:]); "
         "sys.stderr.write('\\nPEAK_RSS_KB=%d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")


def run_case(name: str, args: list[str], **extra) -> dict:
    cmd = [sys.executable, "-c", CHILD, "replay", *map(str, args), "--model", "imu-attitude", "--engine",
           "numba", "--json", "--no-progress"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"case": name, "error": r.stderr[-400:]}
    s = json.loads(r.stdout)
    rss = int(r.stderr.rsplit("PEAK_RSS_KB=", 1)[1].split()[0])
    return {"case": name, "samples": s["samples"], "wall_s": round(wall, 3), "peak_rss_mb": round(rss / 1024, 1),
            "engine_s": round(s["engine_s"], 3), "read_s": round(s["read_s"], 3), "load_s": round(s["load_s"], 3),
            "write_s": round(s["write_s"], 3), "us_per_sample": round(s["us_per_sample"], 3),
            "rmse_deg": s.get("inclination_rmse_deg"), **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, nargs="*", default=[1.0])
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    def case(name, argv, **extra):
        r = run_case(name, argv, **extra)
        print(json.dumps(r), flush=True)
        return r

    run_case("demo_60s_cold", [DEMO])        # compiles and caches what later processes load
    case("demo_60s_warm", [DEMO])
    folder = Path(tempfile.mkdtemp(prefix="replay-scale-", dir=args.workdir))
    try:
        for hours in args.hours:
            rec = repeated(hours)
            paths = write_all(rec, folder, f"imu-{hours:g}h")
            sizes = {k: round(p.stat().st_size / 2**20, 1) for k, p in paths.items()}
            tag = f"{hours:g}h"
            case(f"{tag}_csv_in_csv_out", [paths["csv"], "--output", folder / "out.csv"], input_mb=sizes["csv"])
            case(f"{tag}_parquet_in_parquet_out", [paths["parquet"], "--output", folder / "out.parquet"],
                 input_mb=sizes["parquet"])
            case(f"{tag}_npz_in_no_output", [paths["npz"]], input_mb=sizes["npz"])
            if hours == args.hours[0]:
                print(json.dumps(_vqf(rec, tag)), flush=True)
            for p in [*paths.values(), folder / "out.csv", folder / "out.parquet"]:
                p.unlink(missing_ok=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _vqf(rec, tag: str) -> dict:
    try:
        from vqf import VQF
    except ImportError:
        return {"case": f"{tag}_vqf_updateBatch", "error": "vqf not installed (pip install 'edge[test]')"}
    gyr = np.ascontiguousarray(rec.x[:, 3:6], np.float64)
    acc = np.ascontiguousarray(rec.x[:, 0:3], np.float64)
    t0 = time.perf_counter()
    VQF(1.0 / rec.rate_hz).updateBatch(gyr, acc)
    return {"case": f"{tag}_vqf_updateBatch", "samples": len(rec), "in_memory_s": round(time.perf_counter() - t0, 3)}


if __name__ == "__main__":
    main()
