"""`edge bench` end to end on a small exported LMU bundle: every row present with a positive finite
time, and every ratio it prints equal to the ratio of the numbers it reports."""
import contextlib
import io
import json
import math

import pytest

torch = pytest.importorskip("torch")

from edge.cli import main  # noqa: E402

STREAMS = (1, 4)


@pytest.fixture(scope="module")
def lmu_bundle(tmp_path_factory):
    from edge.export.bundle_export import export_bundle
    from edge.models import LMU, ForecastHead, Stack
    torch.manual_seed(0)
    model = Stack(LMU(3, 8, 8, 16.0), ForecastHead(8, 1, 1)).eval()
    path = tmp_path_factory.mktemp("bench") / "lmu.onnx"
    export_bundle(model, path, input_size=3, task="forecast", name="tiny-lmu", parity_steps=50)
    return path


def bench_json(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["bench", *map(str, argv), "--json", "--no-progress"])
    assert code == 0
    return json.loads(out.getvalue())


def test_bench_json_rows_and_ratios(lmu_bundle):
    res = bench_json(lmu_bundle, "--steps", 50, "--repeats", 1, "--streams", ",".join(map(str, STREAMS)),
                     "--startup-runs", 1)
    rows = {(r["method"], r["streams"]): r for r in res["rows"]}
    expected = {("torch_eager", 1), ("ort_run", 1)} | {
        (m, s) for m in ("ort_iobinding", "numba_step", "numba_block") for s in STREAMS}
    assert set(rows) == expected, res.get("notes")

    floor = res["floor_us"]
    assert res["flops_per_step"] > 0 and res["sgemm"]["gflops"] > 0
    assert floor == pytest.approx(res["flops_per_step"] / (res["sgemm"]["gflops"] * 1e3), rel=1e-9)
    for key, r in rows.items():
        for field in ("us_per_sample", "us_per_sample_min", "wall_us_per_sample", "cpu_us_per_sample", "us_per_call"):
            assert math.isfinite(r[field]) and r[field] > 0, (key, field, r[field])
        assert r["vs_floor"] == pytest.approx(r["us_per_sample"] / floor, rel=1e-9)
        iob = rows[("ort_iobinding", r["streams"])]["us_per_sample"]
        assert r["speedup_vs_iobinding"] == pytest.approx(iob / r["us_per_sample"], rel=1e-9)
    assert rows[("numba_block", 1)]["block_T"] == 50

    us = lambda m, s: rows[(m, s)]["us_per_sample"]
    targets = {t["key"]: t for t in res["targets"]}
    t = targets["numba_step_vs_iobinding_1"]
    assert t["value"] == pytest.approx(us("ort_iobinding", 1) / us("numba_step", 1), rel=1e-9)
    assert t["met"] == (t["value"] >= 2.5)
    t = targets["numba_block_vs_floor_1"]
    assert t["value"] == pytest.approx(us("numba_block", 1) / floor, rel=1e-9)
    assert t["met"] == (t["value"] <= 4.0)
    assert targets["numba_block_vs_floor_1024"]["value"] is None  # 1,024 streams not asked for
    assert targets["numba_block_vs_floor_1024"]["status"] == "not measured"

    # every engine computed the same thing
    agreement = {k: v for k, v in res["agreement_max_abs"].items() if k not in ("reference", "steps")}
    assert set(agreement) == {m for m, _ in expected} and max(agreement.values()) < 1e-4

    # start-up measured in fresh processes, one per engine, none of them importing torch
    startup = {r["engine"]: r for r in res["startup"]}
    assert set(startup) == {"numba", "onnxruntime"}
    for r in startup.values():
        assert "error" not in r, r
        assert r["total_s"] > 0 and r["process_wall_s"] >= r["total_s"] and not r["torch_imported"]
    assert startup["numba"]["numba_cache"].startswith(("cache hit", "compiled (cache miss)"))


def test_bench_table_and_engine_filter(lmu_bundle):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["bench", str(lmu_bundle), "--engine", "numba", "--steps", "30", "--repeats", "1",
                     "--streams", "1", "--startup-runs", "0", "--no-progress"])
    assert code == 0
    text = out.getvalue()
    assert "Numba block" in text and "Numba per call" in text
    assert "ORT session.run" not in text and "OrtExecutor" not in text and "torch eager" not in text
    assert "targets" in text and "not measured" in text  # the IOBinding comparison needs onnxruntime


def test_bench_bad_arguments(lmu_bundle, capsys):
    with pytest.raises(SystemExit):
        main(["bench", str(lmu_bundle), "--streams", "0"])
    assert "stream counts" in capsys.readouterr().err
    assert main(["bench", str(lmu_bundle.with_name("missing.onnx"))]) == 2
