"""The recording readers (pyarrow's CSV reader behind `edge.io.recordings.read_recording`) and the one
resampler (`edge.io.resample.StreamResampler`, also behind `recordings.resample`): every dialect of
CSV people write reads to the same numbers; pushing a stream in chunks of 1, 7 or 65,536 samples
gives the grid of pushing it whole, bit for bit, and that grid is `np.interp` of the samples."""
import gzip

import numpy as np
import pytest

from edge.io.recordings import RecordingError, read_recording, resample
from edge.io.resample import StreamResampler

HEADER = ["t", "acc_x", "acc_y", "acc_z", "gyr_x", "gyr_y", "gyr_z"]


def table(n=400, rate=100.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    x = np.column_stack([rng.normal(0, 0.1, n), rng.normal(0, 0.1, n), 9.81 + rng.normal(0, 0.1, n),
                         rng.normal(0, 0.5, (n, 3))])
    return t, np.round(x, 6)


def text(t, x, delimiter=",", quote=False, newline="\n"):
    q = (lambda s: f'"{s}"') if quote else (lambda s: s)
    lines = [delimiter.join(q(h) for h in HEADER)]
    lines += [delimiter.join(q(f"{v:.6f}") for v in (tk, *row)) for tk, row in zip(t, x)]
    return newline.join(lines) + newline


@pytest.mark.parametrize("dialect", ["plain", "quoted", "crlf", "bom", "semicolon", "tab", "gzip", "comments"])
def test_every_csv_dialect_reads_the_same_numbers(tmp_path, dialect):
    t, x = table()
    body = {"plain": text(t, x), "quoted": text(t, x, quote=True), "crlf": text(t, x, newline="\r\n"),
            "bom": "\ufeff" + text(t, x), "semicolon": text(t, x, delimiter=";"), "tab": text(t, x, delimiter="\t"),
            "gzip": text(t, x), "comments": "# a recorder's note\n#\n\n" + text(t, x)}[dialect]
    path = tmp_path / ("r.csv.gz" if dialect == "gzip" else "r.csv")
    data = body.encode("utf-8")
    path.write_bytes(gzip.compress(data) if dialect == "gzip" else data)
    rec = read_recording(path)
    np.testing.assert_array_equal(rec.t, t.round(6))
    np.testing.assert_array_equal(rec.x, x.astype(np.float32))
    assert rec.warnings == []


def test_nan_inf_and_empty_cells_are_not_fed_and_lines_count_blank_ones(tmp_path):
    t, x = table(200)
    lines = text(t, x).splitlines()
    lines[11] = lines[11].replace(lines[11].split(",")[1], "nan", 1)
    lines[21] = ",".join(lines[21].split(",")[:4] + ["inf", "-inf", ""])
    lines.insert(30, "")                                          # a blank line: skipped, still counted
    lines[60] = lines[60].replace(lines[60].split(",")[2], "abc", 1)
    path = tmp_path / "r.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordingError) as e:
        read_recording(path)
    assert e.value.line == 61 and "'abc' is not a number" in str(e.value) and "acc_y" in str(e.value)
    lines[60] = lines[61 - 1].replace("abc", "0.5")
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(Warning):
        rec = read_recording(path)
    assert len(rec) == 200 and (~rec.valid).sum() == 2
    assert not rec.valid[10] and not rec.valid[20] and np.isinf(rec.x[20, 3])


def test_random_bytes_empty_file_and_header_alone_are_one_line(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "noise.csv").write_bytes(bytes(rng.integers(0, 256, 4000, dtype=np.uint8)))
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "header.csv").write_text(",".join(HEADER) + "\n")
    for name, needle in (("noise.csv", ""), ("empty.csv", "empty"), ("header.csv", "header only")):
        with pytest.raises(RecordingError) as e:
            read_recording(tmp_path / name)
        assert "\n" not in str(e.value) and name in str(e.value) and needle in str(e.value)


def stream(n, seed=0, gaps=True):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.uniform(0.6, 1.4, n)) / 100.0
    if gaps:
        t[n // 2:] += 3.0                                         # a 3 s jump: a gap at gap_s = 0.5
    x = rng.normal(size=(n, 3)).astype(np.float32)
    if gaps:
        x[n // 3:n // 3 + 4, 1] = np.nan                          # a short NaN run
    return t, x


@pytest.mark.parametrize("chunk", [1, 7, 65_536])
def test_resampler_in_chunks_equals_one_push_bit_for_bit(chunk):
    t, x = stream(3000)
    whole = StreamResampler(285.714, 0.5).push(t, x)
    rs = StreamResampler(285.714, 0.5)
    parts = [rs.push(t[a:a + chunk], x[a:a + chunk]) for a in range(0, len(t), chunk)]
    for k in range(6):
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])


def test_resampled_grid_is_linear_interpolation_and_blank_in_a_jump():
    t, x = stream(3000)
    k, tg, xg, j, lag, fed_j = StreamResampler(285.714, 0.5).push(t, x)
    np.testing.assert_allclose(tg, t[0] + np.arange(len(tg)) / 285.714, rtol=0, atol=1e-9)
    assert tg[-1] <= t[-1] < tg[-1] + 1 / 285.714
    jump = (tg > t[1499]) & (tg < t[1500])
    assert jump.sum() > 800 and np.isnan(xg[jump]).all()
    for c in (0, 2):                                              # channels without NaN: np.interp
        ref = np.interp(tg, t, x[:, c].astype(np.float64))
        np.testing.assert_allclose(xg[~jump, c], ref[~jump], rtol=0, atol=1e-6)
    assert (tg[j] <= t + 1e-12).all() and (t - tg[j] < 1 / 285.714 + 1e-9).all()


def test_recordings_resample_is_the_stream_resampler(tmp_path):
    t, x = table(3000, rate=100.0)
    path = tmp_path / "r.csv"
    path.write_text(text(t, x))
    rec = read_recording(path)
    out = resample(rec, 285.714)
    _, tg, xg, *_ = StreamResampler(285.714, rec.meta["gap_s"]).push(rec.t, rec.x)
    np.testing.assert_array_equal(out.t, tg)
    np.testing.assert_array_equal(out.x, xg)
