"""Regenerate ``examples/har-watch-demo.csv``: one recording of seglearn's watch data, for

    edge replay examples/har-watch-demo.csv --model har-watch --plot p.png

The recording: the first one of subject 1 in the file's order (subject 1 is held out by the
shipped `har-watch` bundle, so the demo shows the model on a person it never saw). Columns: ``t``
(s, 50 Hz), ``acc_*`` (m/s²; the file stores g, times 9.80665), ``gyr_*`` (rad/s), and ``label``,
the exercise as a class index in the order of the bundle's outputs (PEN ABD FEL IR ER TRAP ROW).

    python examples/make_har_watch_demo.py [--out examples/har-watch-demo.csv]

seglearn is BSD-3: its copyright notice, conditions and disclaimer go into the file's comment
header and ``examples/HAR-WATCH-DEMO-ATTRIBUTION.md``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edge.io.recordings import IMU_CHANNELS, Recording, write_recording_csv
from edge.tasks.classify.data import WATCH_CLASS_NAMES, load_watch

SUBJECT = 1
HERE = Path(__file__).resolve().parent

LICENCE = """\
Copyright (c) 2018, David M. Burns
All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

* Redistributions of source code must retain the above copyright notice, this
  list of conditions and the following disclaimer.

* Redistributions in binary form must reproduce the above copyright notice,
  this list of conditions and the following disclaimer in the documentation
  and/or other materials provided with the distribution.

* Neither the name of project-template nor the names of its
  contributors may be used to endorse or promote products derived from
  this software without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE."""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "har-watch-demo.csv"))
    args = ap.parse_args(argv)
    data = load_watch()
    i = int(np.flatnonzero(data.subject == SUBJECT)[0])
    x, y = data.x[i].astype(np.float64), int(data.y[i])
    cls = data.classes[y]
    about = (f"Demo smartwatch recording for `edge replay --model har-watch`: recording {i} (0-based) of\n"
             f"seglearn 1.2.5's watch_dataset.npy (Burns et al. 2018, arXiv:1802.01489), subject {SUBJECT},\n"
             f"exercise {cls} ({WATCH_CLASS_NAMES[cls]}), {len(x)} samples at 50 Hz.\n"
             "Columns: t [s], acc_x,acc_y,acc_z [m/s^2] (the file's g times 9.80665), gyr_x,gyr_y,gyr_z [rad/s],\n"
             f"label = class index in PEN ABD FEL IR ER TRAP ROW order ({y} = {cls}).\n"
             "Regenerate with: python examples/make_har_watch_demo.py\n\n"
             "seglearn's licence (BSD-3), which covers its data file:\n")
    rec = Recording(t=np.arange(len(x)) / data.rate_hz, channels=list(IMU_CHANNELS) + ["label"],
                    x=np.concatenate([x, np.full((len(x), 1), y)], 1),
                    units=["m/s^2"] * 3 + ["rad/s"] * 3 + [""], rate_hz=data.rate_hz, source="seglearn watch")
    path = write_recording_csv(rec, args.out, comment=about + "\n" + LICENCE)
    attribution = Path(args.out).parent / "HAR-WATCH-DEMO-ATTRIBUTION.md"
    attribution.write_text(f"# `{Path(args.out).name}` — attribution\n\n{about}\n```\n{LICENCE}\n```\n")
    print(f"wrote {path} ({len(x)} samples, {cls}) and its attribution")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
