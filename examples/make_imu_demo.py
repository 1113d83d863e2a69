"""Regenerate ``examples/imu-demo.csv``: one minute of a BROAD *training* trial, for the README's
main-job command (``edge replay examples/imu-demo.csv --model imu-attitude``).

    python examples/make_imu_demo.py [--broad ../shared/data/broad] [--out examples/imu-demo.csv]

The cut: trial 08 ("undisturbed fast rotation with breaks A", a training trial — never one of the
report-only test trials 03, 05, 07, 09, 12, 16, 21, 25, 27, 29, 35), samples 7360 to 24502 (17,143
samples, 60.0 s at 285.714 Hz), starting 3 s before the first rotation: rest, fast rotation, a
break, rotation again. Columns: ``t`` (s, 0 at the first sample of the cut), ``acc_*`` (m/s²),
``gyr_*`` (rad/s), the motion-capture reference ``qw,qx,qy,qz`` (sensor-to-ENU; empty where the
markers were occluded) and BROAD's ``movement`` mask (1 = scored). Values are rounded to 6
significant digits; nothing else is changed (the magnetometer and position are left out).

BROAD is CC BY 4.0: the attribution goes into the file's comment header and
``examples/IMU-DEMO-ATTRIBUTION.md``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from edge.io.atomic import atomic_write
from edge.io.recordings import Recording, read_recording, write_recording_csv
from edge.io.datasets import BROAD_TEST_TRIALS, broad_root, broad_trial_number

TRIAL = "08_undisturbed_fast_rotation_with_breaks_A"
FIRST, COUNT = 7360, 17143            # samples FIRST .. FIRST+COUNT-1 of the trial (0-based)
DIGITS = 6
HERE = Path(__file__).resolve().parent

ATTRIBUTION = f"""\
Demo IMU recording for `edge replay`: one minute cut from the BROAD dataset.

Source: Laidig, D., Caruso, M., Cereatti, A., Seel, T.: "BROAD — A Benchmark for Robust Inertial
Orientation Estimation", Data 6(7), 2021, doi:10.3390/data6070072.
https://github.com/dlaidig/broad
Licence: Creative Commons Attribution 4.0 International (CC BY 4.0),
https://creativecommons.org/licenses/by/4.0/

Trial: {TRIAL} (a BROAD training trial in this project's split; not a test trial).
Samples: {FIRST} to {FIRST + COUNT - 1} of the trial (0-based, {COUNT} samples, {COUNT / 285.714:.1f} s at 285.714 Hz),
i.e. trial time {FIRST * 0.0035:.4f} s to {(FIRST + COUNT - 1) * 0.0035:.4f} s; here t starts at 0.
Columns: t [s], acc_x,acc_y,acc_z [m/s^2], gyr_x,gyr_y,gyr_z [rad/s] (IMU frame),
qw,qx,qy,qz = optical motion-capture reference orientation, IMU-to-ENU (w,x,y,z; empty where occluded),
movement = BROAD's scoring mask (1 = scored).
Changes: cut and rounded to 6 significant digits, otherwise unmodified
(magnetometer and position columns left out).
Regenerate with: python examples/make_imu_demo.py"""


def _round(a: np.ndarray) -> np.ndarray:
    """Round to DIGITS significant digits (decimal, correctly rounded); NaN stays NaN."""
    flat = np.asarray(a, dtype=np.float64).reshape(-1)
    out = np.array([float(f"{v:.{DIGITS}g}") for v in flat.tolist()], dtype=np.float64)
    return out.reshape(np.shape(a))


def _compact(path: Path) -> None:
    """Rewrite the data cells of a CSV written by `write_recording_csv` with DIGITS significant
    digits (its ``%.9g`` shows float32 noise like 0.123456001 for the already rounded values)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#") or line.startswith("t,"):
            out.append(line)
            continue
        out.append(",".join("" if c == "nan" else f"{float(c):.{DIGITS}g}" for c in line.split(",")))
    atomic_write(path, "\n".join(out) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--broad", default=None, help="BROAD directory (default: ../shared/data/broad)")
    p.add_argument("--out", default=str(HERE / "imu-demo.csv"), help="output CSV (default: examples/imu-demo.csv)")
    args = p.parse_args(argv)

    src = broad_root(args.broad) / f"{TRIAL}.npz"
    if broad_trial_number(src) in BROAD_TEST_TRIALS:
        raise SystemExit(f"{src.name} is a test trial: the demo must come from a training trial")
    rec = read_recording(src)
    sl = slice(FIRST, FIRST + COUNT)
    if sl.stop > len(rec):
        raise SystemExit(f"{src.name} has {len(rec)} samples, the cut needs {sl.stop}")
    acc, gyr = _round(rec.acc[sl]), _round(rec.gyr[sl])
    ref = _round(rec.reference[sl])
    t = _round((np.arange(COUNT) * 0.0035))   # the trial's grid, 0 at the cut (1/285.714 Hz = 3.5 ms)
    demo = Recording.from_imu(acc, gyr, rate_hz=rec.rate_hz, t=t, reference=ref, scored=rec.scored[sl],
                              source=str(src))
    out = Path(args.out)
    write_recording_csv(demo, out, comment=ATTRIBUTION)
    _compact(out)
    (out.parent / "IMU-DEMO-ATTRIBUTION.md").write_text(_markdown(out.name), encoding="utf-8")

    back = read_recording(out)       # the file must read back to exactly the rounded values
    assert len(back) == COUNT and back.gaps == []
    assert np.array_equal(back.x, demo.x) and np.array_equal(back.t, t)
    assert np.array_equal(back.scored, demo.scored)
    assert np.allclose(back.reference, ref / np.linalg.norm(ref, axis=1, keepdims=True), equal_nan=True)
    print(f"{out}: {COUNT} samples, {back.duration_s:.1f} s, {int(back.scored.sum())} scored, "
          f"{int(np.isnan(back.reference).any(axis=1).sum())} reference rows occluded, "
          f"{out.stat().st_size / 1e6:.2f} MB")
    return 0


def _markdown(name: str) -> str:
    last = FIRST + COUNT - 1
    return f"""# `{name}` — attribution

`{name}` is one minute cut from the **BROAD** dataset:

> Laidig, D., Caruso, M., Cereatti, A., Seel, T.: "BROAD — A Benchmark for Robust Inertial
> Orientation Estimation", *Data* 6(7), 2021, doi:[10.3390/data6070072](https://doi.org/10.3390/data6070072).
> Dataset: <https://github.com/dlaidig/broad>

**Licence:** [Creative Commons Attribution 4.0 International (CC BY 4.0)](https://creativecommons.org/licenses/by/4.0/).
The same attribution is in the file's `# ` comment header (which `read_recording` skips).

- **Trial:** `{TRIAL}` — a training trial in this project's split (not one of the report-only test
  trials 03, 05, 07, 09, 12, 16, 21, 25, 27, 29, 35).
- **Samples:** {FIRST} to {last} of the trial (0-based; {COUNT} samples, {COUNT / 285.714:.1f} s at 285.714 Hz),
  trial time {FIRST * 0.0035:.4f} s to {last * 0.0035:.4f} s; in the file `t` starts at 0. The cut starts 3 s
  before the first rotation: rest, fast rotation, a break, rotation again.
- **Columns:** `t` [s]; `acc_x,acc_y,acc_z` [m/s²] and `gyr_x,gyr_y,gyr_z` [rad/s] in the IMU frame;
  `qw,qx,qy,qz` the optical motion-capture reference orientation, IMU-to-ENU (w, x, y, z; empty where
  the markers were occluded); `movement` BROAD's scoring mask (1 = scored).
- **Changes:** cut and rounded to 6 significant digits, otherwise unmodified (the magnetometer and
  position columns are left out).
- **Regenerate:** `python examples/make_imu_demo.py` (reads `../shared/data/broad/`).
"""


if __name__ == "__main__":
    sys.exit(main())
