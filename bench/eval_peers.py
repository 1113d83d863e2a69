"""Score the PyPI attitude filters (VQF, BasicVQF, Madgwick, EKF, imufusion, RIANN) on BROAD.

    python bench/eval_peers.py                          # test split, native 285.7 Hz
    python bench/eval_peers.py --rate 100               # resampled to 100 Hz first
    python bench/eval_peers.py --split all --peers VQF BasicVQF --json out.json

Prints a table of inclination RMSE (BROAD metric; mean and worst trial, degrees) and µs per sample
(wall clock around each peer's whole call, Python overhead included; the machine is shared, so
timings are order-of-magnitude). Progress goes to stderr. The BROAD test split is report-only:
never tune on it. Peers whose package is missing are listed as "not installed: pip install …"
(they are in the `test` extra: pip install -e '.[test]').
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge import peers  # noqa: E402
from edge.evaluate import broad_trials, evaluate_attitude, format_table  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "broad"),
                        help="folder of BROAD .npz trials (default: ../shared/data/broad from the repo root)")
    parser.add_argument("--split", choices=["test", "train", "all"], default="test",
                        help="which trials (default: test, report-only)")
    parser.add_argument("--rate", type=float, default=None, metavar="HZ",
                        help="resample every trial to HZ first (e.g. 100, 50); default: native rate")
    parser.add_argument("--peers", nargs="+", default=list(peers.PEERS), metavar="NAME",
                        help=f"which peers (default: all: {' '.join(peers.PEERS)})")
    parser.add_argument("--json", metavar="PATH", help="also write the full per-trial results as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = parser.parse_args(argv)

    unknown = [p for p in args.peers if p not in peers.PEERS]
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(peers.PEERS)}")
    try:
        trials = broad_trials(args.data, args.split)
    except FileNotFoundError as exc:
        parser.exit(2, f"error: {exc}\n")
    # Missing peers stay in the table as "not installed: pip install …".
    ests = {name: peers.PEERS[name].estimate for name in args.peers}

    t0 = time.perf_counter()
    results = evaluate_attitude(ests, trials, rate_hz=args.rate, progress=not args.no_progress)
    wall = time.perf_counter() - t0
    print(f"BROAD {args.split} split: " + format_table(results, {n: peers.PEERS[n].note for n in ests}))
    print("versions: " + ", ".join(f"{k} {v or 'missing'}" for k, v in peers.versions().items()))
    print(f"wall {wall:.0f} s on {platform.processor() or platform.machine()}, Python "
          f"{platform.python_version()}; inclination RMSE in degrees; RIANN has likely seen BROAD in training.")
    if args.json:
        results["split"], results["wall_s"], results["versions"] = args.split, wall, peers.versions()
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
