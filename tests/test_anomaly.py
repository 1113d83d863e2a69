"""Streaming anomaly events (edge.tasks.anomaly.detector): step equals block, one spike is one event,
bounded state, every injected kind found where it was put in real ETT data, warm-up, bad input."""
import json
from dataclasses import replace

import numpy as np
import pytest

from edge.tasks.anomaly.detector import AnomalyDetector, ConfigError, DetectorConfig, load_config
from edge.tasks.anomaly.evaluate import Stream, flat_rows, match
from edge.io.datasets import CHANNELS, dataset_path, read_ett, split_borders
from edge.tasks.anomaly.inject import KINDS, Injected, inject, inject_many


@pytest.fixture(scope="module")
def ett():
    """ETTh1's validation months with a month before them: real hourly data, 7 channels."""
    _, v = read_ett(dataset_path("ETTh1"))
    lo, hi = split_borders("ETTh1")["val"]
    return v[lo - 720:hi]


@pytest.fixture(scope="module")
def config():
    return load_config("anomaly-ett")[0]


def events_of(cfg, x, channels=CHANNELS):
    det = AnomalyDetector(cfg, list(channels))
    events, score = det.run(x)
    return events + det.close(), score, det


def test_step_equals_block(ett, config):
    x = ett[:1500].copy()
    x[[300, 301, 900], 2] = np.nan                 # not fed: held state, on one channel only
    x[700, 5] = np.inf
    x[1000:1003, 6] += 40.0                         # something to detect
    block, score, _ = events_of(config, x)
    det = AnomalyDetector(config, list(CHANNELS))
    stepped, rows = [], []
    for row in x:
        stepped += det.step(row)
        rows.append(det.score.copy())
    stepped += det.close()
    assert stepped == block and len(block) > 0
    np.testing.assert_array_equal(np.array(rows), score)


def test_one_spike_is_one_event_and_hysteresis_is_what_makes_it_so(ett, config):
    """A 12σ spike in LUFL: its value sits in the AR's lags, so the residuals ring for a few samples;
    without hysteresis (exit = enter, no merge gap) the ringing is a second event."""
    at = 1000
    x = ett[:, 4:5].copy()
    x[at, 0] += 12 * x[:, 0].std()
    near = lambda events: [e for e in events if at - 50 <= e.start < at + 100]   # noqa: E731
    assert near(events_of(config, ett[:, 4:5], ["LUFL"])[0]) == []
    new = near(events_of(config, x, ["LUFL"])[0])
    assert len(new) == 1
    assert new[0].start == new[0].detected_at == at and new[0].cause == "residual"
    bare = replace(config, exit=config.enter, merge=0)
    assert len(near(events_of(bare, x, ["LUFL"])[0])) > 1


def test_state_does_not_grow_with_the_stream(ett, config):
    det = AnomalyDetector(config, list(CHANNELS))
    det.run(ett[:50])
    size = det.state_bytes()
    for _ in range(4):
        det.run(ett)
    assert det.state_bytes() == size
    # the state is what the AR order and the channel count make it: θ, P and lags per channel
    p, C = config.order, len(CHANNELS)
    assert size - 8 * C * (p + p * p + p) < 8 * C * 40


def test_inject_changes_exactly_the_labelled_samples(ett):
    rng = np.random.default_rng(3)
    x, labels = inject_many(ett, rng, {"level_shift": 24, "drift": 24, "stuck": 24, "dropout": 24}, spacing=240)
    changed = x != ett
    expected = np.zeros_like(changed)
    for lab in labels:
        orig = ett[lab.start:lab.end, lab.channel]
        # a held value or a 0 equal to the original by chance is labelled but unchanged there
        held = {"stuck": orig[0], "dropout": 0.0}.get(lab.kind)
        expected[lab.start:lab.end, lab.channel] = True if held is None else orig != held
    np.testing.assert_array_equal(changed, expected)
    assert {lab.kind for lab in labels} == set(KINDS)
    sigma = ett.std(axis=0)
    for lab in labels:
        seg, orig = x[lab.start:lab.end, lab.channel], ett[lab.start:lab.end, lab.channel]
        if lab.kind == "spike":
            assert seg[0] - orig[0] == pytest.approx(lab.magnitude * sigma[lab.channel])
        if lab.kind == "drift":
            np.testing.assert_allclose(np.diff(seg - orig), lab.magnitude * sigma[lab.channel] / 24)
        if lab.kind == "dropout":
            assert np.all(seg == 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_found_where_it_was_put(ett, config, kind):
    """One anomaly of each kind in real ETTh1 (HUFL, after the warm-up): the event is flagged inside
    the label and starts where the anomaly starts (a drift: when it leaves the usual range, inside it)."""
    start, c = 1500, 0
    cfg = replace(config, level=4.0) if kind == "drift" else config
    lab = Injected(kind, c, start, start + (1 if kind == "spike" else 48),
                   {"spike": 8.0, "level_shift": 4.0, "drift": 8.0}.get(kind, 0.0))
    x = ett.copy()
    inject(x, lab, ett[:, c].std())
    clean = events_of(cfg, ett[:, c:c + 1], ["HUFL"])[0]
    found = [e for e in events_of(cfg, x[:, c:c + 1], ["HUFL"])[0] if e not in clean]
    hits = [e for e in found if lab.start <= e.detected_at < lab.end]
    assert hits, f"{kind}: no event flagged in [{lab.start}, {lab.end}): {found}"
    e = hits[0]
    if kind == "drift":
        assert e.cause == "level" and lab.start < e.start == e.detected_at
    else:
        assert e.start == lab.start
        assert e.cause == ("stuck" if kind == "stuck" else "residual") or kind == "dropout"


def test_warmup_suppresses_events(ett, config):
    x = ett[:, :1].copy()
    early, late = config.warmup - 20, config.warmup + 200
    x[early, 0] += 20 * x[:, 0].std()
    x[late, 0] += 20 * x[:, 0].std()
    events, score, _ = events_of(config, x, ["HUFL"])
    assert not any(e.start <= early + config.order for e in events)
    assert score[early, 0] < config.enter <= score[late, 0]
    assert any(e.detected_at == late for e in events)


def test_non_finite_samples_are_not_fed_and_other_channels_go_on(ett, config):
    x = ett[:2000].copy()
    bad = np.zeros(len(x), bool)
    bad[[10, 500, 501, 502, 1700]] = True
    x[bad, 3] = [np.nan, np.inf, -np.inf, np.nan, np.nan]
    events, score, det = events_of(config, x)
    assert det.missing.tolist() == [0, 0, 0, int(bad.sum()), 0, 0, 0]
    assert np.isnan(score[bad, 3]).all() and np.isfinite(score[~bad, 3]).all()
    others = [0, 1, 2, 4, 5, 6]                     # channels are independent: as if alone
    alone_events, alone_score, _ = events_of(config, ett[:2000, others], [CHANNELS[k] for k in others])
    np.testing.assert_array_equal(score[:, others], alone_score)
    assert [(e.name, e.start, e.end) for e in events if e.channel != 3] == \
        [(e.name, e.start, e.end) for e in alone_events]
    # a channel that skips samples is the same stream without them
    skipped, skipped_score, _ = events_of(config, ett[:2000][~bad][:, 3:4], ["MULL"])
    np.testing.assert_array_equal(score[~bad, 3], skipped_score[:, 0])


def test_wrong_shapes_are_refused(config):
    det = AnomalyDetector(config, ["a", "b"])
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(2,\)"):
        det.step([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"shape \(5, 1\), expected \(T, 2\)"):
        det.run(np.zeros((5, 1)))
    with pytest.raises(ValueError, match="forecasts have shape"):
        det.run(np.zeros((5, 2)), forecasts=np.zeros((4, 2)))
    assert det.t[0] == 0                             # nothing was consumed


@pytest.mark.parametrize("text, what", [
    ("not json", "cannot read"),
    ('{"detector": {"enter": "high"}}', "field enter must be float"),
    ('{"detector": {"enter": 6, "exit": 9}}', "bad value for exit"),
    ('{"detector": {"entr": 6}}', "unknown detector field"),
    ('{"detector": {"stuck": 2.5}}', "field stuck must be int"),
    ('[1, 2]', "a JSON object"),
])
def test_bad_configurations_are_one_clear_error(tmp_path, text, what):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(ConfigError, match=what) as err:
        load_config(p)
    assert str(p) in str(err.value) and "\n" not in str(err.value)


def test_shipped_configurations_load_and_say_how_they_were_chosen():
    for name in ("anomaly-ett", "anomaly-ettm", "anomaly-imu"):
        cfg, doc = load_config(name)
        assert cfg.exit <= cfg.enter and doc["dev"]["f1"] > 0
        assert doc["provenance"]["command"].startswith("edge train anomaly")


def test_matching_rule_by_hand():
    labels = [Injected("spike", 0, 100, 101, 5.0), Injected("level_shift", 1, 200, 224, 2.0),
              Injected("drift", 0, 300, 324, 3.0)]
    st = Stream("toy", np.zeros((400, 2)), 50, 400, channels=["a", "b"], per_hour=1, lengths={}, spacing=100,
                grace=10)
    st.fault[360:370] = True
    from edge.tasks.anomaly.detector import Event
    ev = lambda c, s, e, d: Event(c, "ab"[c], s, e, 9.0, d, d, "residual")
    events = [ev(0, 100, 103, 100),          # detects the spike
              ev(1, 224, 226, 224),          # after the shift ended, within grace: explained, not a detection
              ev(0, 330, 331, 330),          # after the drift, within grace: explained
              ev(0, 362, 364, 362),          # on a real fault: neither
              ev(1, 380, 381, 380),          # false
              ev(0, 10, 12, 10)]             # before the scored rows: ignored
    m = match(events, labels, st)
    assert m["detected"] == {"spike": 1, "level_shift": 0, "drift": 0, "stuck": 0, "dropout": 0}
    assert m["delays"]["spike"] == [0]
    assert (m["explained"], m["false"], m["on_fault"]) == (3, 1, 1)


def test_flat_rows_marks_runs_where_every_channel_repeats():
    x = np.arange(40, dtype=float).reshape(20, 2)
    x[5:10] = x[5]          # rows 5..9 repeat row 5: a run of 5 rows
    x[14:16] = x[14]        # 2 rows: too short
    x[17:19, 0] = x[17, 0]  # one channel only: not a flat row
    expected = np.zeros(20, bool)
    expected[5:10] = True
    np.testing.assert_array_equal(flat_rows(x, 4), expected)


def test_shipped_config_on_a_clean_day_is_quiet_and_finds_a_dropout(ett, config):
    """The shipped ETT thresholds: a one-day dropout of OT in real data is one event there, and the
    same week without it has no event on OT."""
    week = slice(1200, 1200 + 168)
    clean = [e for e in events_of(config, ett)[0] if e.channel == 6 and week.start <= e.start < week.stop]
    x = ett.copy()
    inject(x, Injected("dropout", 6, 1250, 1274), 0.0)
    found = [e for e in events_of(config, x)[0] if e.channel == 6 and week.start <= e.start < week.stop]
    assert clean == [] and len(found) == 1 and found[0].start == 1250
    assert json.dumps(found[0].as_dict())


def test_forecaster_stays_stable_over_a_long_real_imu_trial():
    """A whole BROAD trial (rest, then 3 minutes of motion at 285.7 Hz): the RLS covariance stays
    symmetric positive definite and the scores stay those of a calibrated scale (median about
    0.67σ for any symmetric residual), where an indefinite P once made θ explode."""
    from edge.io.recordings import IMU_CHANNELS, read_recording
    from edge.io.datasets import broad_trials
    x = read_recording(broad_trials(split="train")[0]).columns(IMU_CHANNELS).astype(np.float64)
    det = AnomalyDetector(load_config("anomaly-imu")[0], list(IMU_CHANNELS))
    _, score = det.run(x)
    for P in det.P:
        np.testing.assert_allclose(P, P.T)
        assert np.linalg.eigvalsh(P).min() > 0
    median = np.median(score[len(x) // 4:], axis=0)
    assert np.all((median > 0.3) & (median < 1.5)), median
