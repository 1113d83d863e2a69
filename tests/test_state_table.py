"""Tests for edge.engine.state_table.StateTable."""
from __future__ import annotations

import os

import numpy as np
import pytest

from edge.engine.state_table import StateFileError, StateTable

S = 5


def init_row() -> np.ndarray:
    return np.arange(S, dtype=np.float32) * 0.5 - 1.0


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def fill(table: StateTable, stream_id: str, value) -> None:
    table.rows[table.slot_of(stream_id)] = value


def row(table: StateTable, stream_id: str) -> np.ndarray:
    return table.rows[table.slot_of(stream_id)].copy()


# ------------------------------------------------------------------ slots


def test_new_stream_starts_from_init_row():
    t = StateTable(init_row(), capacity=8)
    s = t.slots(["a", "b"])
    assert s.dtype == np.int64
    assert t.rows.dtype == np.float32 and t.rows.flags.c_contiguous
    assert t.rows.shape[1] == S
    np.testing.assert_array_equal(t.rows[s], np.stack([init_row(), init_row()]))
    assert len(t) == 2 and "a" in t and "b" in t and "c" not in t


def test_slot_assignment_is_stable_across_calls_and_growth():
    t = StateTable(init_row(), capacity=100, initial_slots=2)
    first = t.slots(["a", "b"])
    assert len(set(first.tolist())) == 2
    t.rows[first] = [[1.0] * S, [2.0] * S]
    assert t.rows.shape[0] == 2
    # Force growth with many new streams; a and b keep their slots and contents.
    others = [f"s{i}" for i in range(40)]
    got = t.slots(others + ["b", "a"])
    assert t.rows.shape[0] >= 42 and t.rows.shape[0] <= 100
    assert got[-1] == first[0] and got[-2] == first[1]
    assert len(set(got.tolist())) == len(got)
    np.testing.assert_array_equal(t.rows[first[0]], np.full(S, 1.0, np.float32))
    np.testing.assert_array_equal(t.rows[first[1]], np.full(S, 2.0, np.float32))
    np.testing.assert_array_equal(t.slots(["a", "b"]), first)
    # Growth is geometric and bounded by capacity.
    assert t.rows.shape[0] == 64  # 2 -> 4 -> 8 -> 16 -> 32 -> 64


def test_duplicate_ids_in_one_call_rejected_without_side_effects():
    t = StateTable(init_row(), capacity=8)
    with pytest.raises(ValueError, match="'x'"):
        t.slots(["x", "y", "x"])
    assert len(t) == 0


def test_single_string_and_non_str_ids_rejected():
    t = StateTable(init_row(), capacity=8)
    with pytest.raises(TypeError):
        t.slots("abc")
    with pytest.raises(TypeError):
        t.slots([1, 2])
    assert len(t) == 0


def test_capacity_overflow_in_one_call_raises_value_error():
    t = StateTable(init_row(), capacity=3)
    t.slots(["a", "b"])
    with pytest.raises(ValueError, match="capacity 3"):
        t.slots(["w", "x", "y", "z"])
    assert t.ids() == ["a", "b"]  # nothing changed
    assert t.evictions == 0
    # Exactly capacity is fine.
    s = t.slots(["x", "y", "z"])
    assert len(set(s.tolist())) == 3
    assert sorted(t.ids()) == ["x", "y", "z"]


# ------------------------------------------------------------------ LRU


def test_lru_eviction_order():
    t = StateTable(init_row(), capacity=3)
    t.slots(["a"])
    t.slots(["b"])
    t.slots(["c"])
    t.slots(["a"])  # order of use now: b, c, a
    assert t.ids() == ["b", "c", "a"]
    slot_b = t.slot_of("b")
    s = t.slots(["d"])
    assert "b" not in t and t.ids() == ["c", "a", "d"]
    assert s[0] == slot_b  # the evicted slot is reused
    np.testing.assert_array_equal(t.rows[s[0]], init_row())  # and re-initialised
    t.slots(["e"])
    assert "c" not in t and t.ids() == ["a", "d", "e"]
    assert t.evictions == 2


def test_eviction_skips_streams_in_the_current_call():
    t = StateTable(init_row(), capacity=3)
    t.slots(["a", "b", "c"])  # a is the least recently used
    for sid, v in zip("abc", (1.0, 2.0, 3.0)):
        fill(t, sid, v)
    s = t.slots(["a", "x"])  # a is in the call: b (next LRU) must go, not a
    assert "a" in t and "b" not in t and "c" in t and "x" in t
    assert s[0] != s[1]
    np.testing.assert_array_equal(row(t, "a"), np.full(S, 1.0, np.float32))
    # New ids listed before an existing one in the same call.
    t.slots(["y", "z", "a"])  # live: c, a, x (c oldest) -> c and x evicted, a kept
    assert sorted(t.ids()) == ["a", "y", "z"]
    np.testing.assert_array_equal(row(t, "a"), np.full(S, 1.0, np.float32))


def test_10000_ids_with_capacity_64_keeps_memory_bounded():
    t = StateTable(init_row(), capacity=64)
    ids = [f"stream-{i}" for i in range(10_000)]
    for k in range(0, len(ids), 8):
        s = t.slots(ids[k:k + 8])
        assert t.rows.shape[0] <= 64
        assert len(set(s.tolist())) == len(s)
        assert s.min() >= 0 and s.max() < t.rows.shape[0]
    assert t.rows.shape == (64, S)
    assert len(t) == 64
    assert t.ids() == ids[-64:]
    assert t.evictions == 10_000 - 64


# ------------------------------------------------------------------ evict_to


def test_evict_to_round_trip_restores_exact_row(tmp_path):
    d = tmp_path / "evicted"
    t = StateTable(init_row(), capacity=2, evict_to=d, fingerprint="fp1")
    t.slots(["a", "b"])
    special = np.array([np.pi, -0.0, 1e-42, -3.0e38, 7.0], dtype=np.float32)  # incl. denormal
    fill(t, "a", special)
    fill(t, "b", 9.0)
    t.slots(["c"])  # evicts a
    assert "a" not in t
    files = list(d.glob("*.npz"))
    assert len(files) == 1
    t.slots(["a"])  # evicts b, restores a
    assert "a" in t and "b" not in t
    np.testing.assert_array_equal(bits(row(t, "a")), bits(special))
    assert t.restored == 1
    assert t.evictions == 2
    # a's checkpoint was consumed; b's is on disk.
    assert len(list(d.glob("*.npz"))) == 1
    t.slots(["b"])
    np.testing.assert_array_equal(row(t, "b"), np.full(S, 9.0, np.float32))
    assert t.restored == 2


def test_without_evict_to_an_evicted_stream_comes_back_fresh():
    t = StateTable(init_row(), capacity=1)
    t.slots(["a"])
    fill(t, "a", 4.0)
    t.slots(["b"])
    t.slots(["a"])
    np.testing.assert_array_equal(row(t, "a"), init_row())


def test_evict_to_checkpoint_of_other_fingerprint_is_not_used(tmp_path):
    d = tmp_path / "ev"
    t1 = StateTable(init_row(), capacity=1, evict_to=d, fingerprint="old")
    t1.slots(["a"])
    fill(t1, "a", 5.0)
    t1.slots(["b"])  # a checkpointed under "old"
    t2 = StateTable(init_row(), capacity=1, evict_to=d, fingerprint="new")
    t2.slots(["a"])
    np.testing.assert_array_equal(row(t2, "a"), init_row())
    assert t2.restored == 0


def test_corrupt_eviction_checkpoint_is_counted_and_stream_starts_fresh(tmp_path):
    d = tmp_path / "ev"
    t = StateTable(init_row(), capacity=1, evict_to=d)
    t.slots(["a"])
    fill(t, "a", 5.0)
    t.slots(["b"])
    (f,) = d.glob("*.npz")
    f.write_bytes(f.read_bytes()[:50])
    t.slots(["a"])  # must not raise
    np.testing.assert_array_equal(row(t, "a"), init_row())
    assert t.checkpoint_errors == 1 and t.restored == 0


# ------------------------------------------------------------------ reset_after_s


def test_reset_after_s_resets_idle_stream_but_not_active_one():
    t = StateTable(init_row(), capacity=8, reset_after_s=5.0)
    t.slots(["idle", "active"], now=0.0)
    fill(t, "idle", 1.0)
    fill(t, "active", 2.0)
    t.slots(["active"], now=3.0)
    t.slots(["active"], now=7.0)  # gap 4 <= 5: kept
    t.slots(["active", "idle"], now=7.0)  # idle: gap 7 > 5: reset
    np.testing.assert_array_equal(row(t, "active"), np.full(S, 2.0, np.float32))
    np.testing.assert_array_equal(row(t, "idle"), init_row())
    assert t.resets == 1
    assert t.last_seen("idle") == 7.0
    # Exactly reset_after_s is not "longer than".
    fill(t, "idle", 3.0)
    t.slots(["idle"], now=12.0)
    np.testing.assert_array_equal(row(t, "idle"), np.full(S, 3.0, np.float32))


def test_reset_after_s_per_id_timestamps_and_across_eviction(tmp_path):
    t = StateTable(init_row(), capacity=1, reset_after_s=10.0, evict_to=tmp_path)
    t.slots(["a"], now=[100.0])
    fill(t, "a", 6.0)
    t.slots(["b"], now=101.0)  # a evicted with last_seen=100
    t.slots(["a"], now=105.0)  # restored, gap 5: kept
    np.testing.assert_array_equal(row(t, "a"), np.full(S, 6.0, np.float32))
    t.slots(["b"], now=106.0)  # a evicted with last_seen=105
    t.slots(["a"], now=200.0)  # restored, gap 95: reset
    np.testing.assert_array_equal(row(t, "a"), init_row())
    with pytest.raises(ValueError):
        t.slots(["a"], now=[1.0, 2.0])


# ------------------------------------------------------------------ reset / drop


def test_reset_and_drop():
    t = StateTable(init_row(), capacity=4)
    t.slots(["a", "b"])
    fill(t, "a", 3.0)
    t.reset("a")
    np.testing.assert_array_equal(row(t, "a"), init_row())
    slot_b = t.slot_of("b")
    t.drop("b")
    assert "b" not in t and len(t) == 1
    assert t.slots(["c"])[0] == slot_b  # freed slot reused
    with pytest.raises(KeyError, match="nope"):
        t.reset("nope")
    with pytest.raises(KeyError, match="nope"):
        t.drop("nope")
    with pytest.raises(KeyError):
        t.drop("b")  # already dropped


def test_drop_and_reset_of_checkpointed_stream(tmp_path):
    t = StateTable(init_row(), capacity=1, evict_to=tmp_path)
    t.slots(["a"])
    fill(t, "a", 2.0)
    t.slots(["b"])  # a on disk only
    t.reset("a")  # removes the checkpoint
    t.slots(["a"])
    np.testing.assert_array_equal(row(t, "a"), init_row())
    fill(t, "a", 2.0)
    t.slots(["b"])
    t.drop("a")
    assert list(tmp_path.glob("*.npz")) == []
    with pytest.raises(KeyError):
        t.drop("a")


# ------------------------------------------------------------------ gather / scatter


def test_gather_scatter_round_trip():
    t = StateTable(init_row(), capacity=8)
    s = t.slots(["a", "b", "c"])
    dense = t.gather(s[[2, 0]])
    np.testing.assert_array_equal(dense, np.stack([init_row()] * 2))
    new = np.arange(2 * S, dtype=np.float32).reshape(2, S)
    t.scatter(s[[2, 0]], new)
    np.testing.assert_array_equal(row(t, "c"), new[0])
    np.testing.assert_array_equal(row(t, "a"), new[1])
    np.testing.assert_array_equal(row(t, "b"), init_row())
    out = np.empty((3, S), np.float32)
    res = t.gather(s, out=out)
    assert res is out
    np.testing.assert_array_equal(out, t.rows[s])
    with pytest.raises(ValueError):
        t.scatter(s, new)  # wrong shape
    with pytest.raises(IndexError):
        t.gather([t.rows.shape[0]])


# ------------------------------------------------------------------ save / load


def make_saved_table(tmp_path, fingerprint="spec-abc"):
    rng = np.random.default_rng(0)
    t = StateTable(init_row(), capacity=16, fingerprint=fingerprint)
    ids = ["imu/1", "ünï-cødé", "", "x" * 200, "b", "a"]
    t.slots(ids[:3], now=10.0)
    t.slots(ids[3:])  # no timestamp
    t.slots(["imu/1"], now=12.5)
    for sid in ids:
        fill(t, sid, rng.standard_normal(S).astype(np.float32))
    fill(t, "b", np.array([np.finfo(np.float32).max, -0.0, -np.finfo(np.float32).max, 1e-40, 0.0], np.float32))
    path = tmp_path / "state.npz"
    t.save(path)
    return t, path


def test_save_load_round_trip_is_bit_exact(tmp_path):
    t, path = make_saved_table(tmp_path)
    u = StateTable.load(path, init_row(), capacity=16, fingerprint="spec-abc")
    assert u.ids() == t.ids()  # same LRU order
    for sid in t.ids():
        np.testing.assert_array_equal(bits(row(u, sid)), bits(row(t, sid)))
        assert u.last_seen(sid) == t.last_seen(sid)
    assert u.last_seen("imu/1") == 12.5 and u.last_seen("b") is None
    # restore() into an existing table replaces its contents
    v = StateTable(init_row(), capacity=16, fingerprint="spec-abc")
    v.slots(["stale"])
    v.restore(path)
    assert v.ids() == t.ids() and "stale" not in v
    # the restored table keeps working: new streams take free slots
    s = v.slots(["new"])
    assert s[0] not in [v.slot_of(i) for i in t.ids()]


def test_save_load_empty_table(tmp_path):
    t = StateTable(init_row(), capacity=4)
    p = tmp_path / "empty.npz"
    t.save(p)
    u = StateTable.load(p, init_row(), capacity=4)
    assert len(u) == 0 and u.ids() == []


def test_load_more_streams_than_capacity_keeps_most_recent(tmp_path):
    t = StateTable(init_row(), capacity=8)
    t.slots(["a", "b", "c", "d", "e"])
    for i, sid in enumerate("abcde"):
        fill(t, sid, float(i))
    p = tmp_path / "s.npz"
    t.save(p)
    ev = tmp_path / "ev"
    u = StateTable.load(p, init_row(), capacity=3, evict_to=ev)
    assert u.ids() == ["c", "d", "e"] and u.rows.shape[0] <= 3
    u.slots(["a"])  # comes back from the eviction checkpoint written by load
    np.testing.assert_array_equal(row(u, "a"), np.full(S, 0.0, np.float32))
    assert u.restored == 1


def test_save_is_atomic_when_replace_fails(tmp_path, monkeypatch):
    t, path = make_saved_table(tmp_path)
    before = path.read_bytes()
    fill(t, "a", 123.0)
    t.slots(["extra"])

    def boom(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated crash"):
        t.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.npz"]  # no temp left over
    u = StateTable.load(path, init_row(), capacity=16, fingerprint="spec-abc")
    assert "extra" not in u
    assert not np.array_equal(row(u, "a"), np.full(S, 123.0, np.float32))


def test_save_fsyncs_file_and_directory(tmp_path, monkeypatch):
    import stat

    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    t = StateTable(init_row(), capacity=4)
    t.slots(["a"])
    t.save(tmp_path / "s.npz")
    assert False in synced and True in synced  # the file and its directory
    assert synced.index(False) < synced.index(True)


def test_save_uses_exact_path(tmp_path):
    t = StateTable(init_row(), capacity=4)
    p = tmp_path / "state.ckpt"  # no .npz suffix appended
    t.save(p)
    assert p.exists() and not (tmp_path / "state.ckpt.npz").exists()
    StateTable.load(p, init_row(), capacity=4)


@pytest.mark.parametrize("damage", ["truncate", "truncate_tiny", "garbage", "empty", "flip"])
def test_corrupt_or_truncated_file_raises_state_file_error(tmp_path, damage):
    t, path = make_saved_table(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "truncate_tiny":
        data = data[:10]
    elif damage == "garbage":
        data = bytearray(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif damage == "empty":
        data = bytearray()
    elif damage == "flip":
        # flip a byte inside the stored rows data (find the float payload of row "b")
        needle = bits(row(t, "b")).tobytes()
        at = bytes(data).find(needle)
        assert at > 0
        data[at + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StateFileError) as ei:
        StateTable.load(path, init_row(), capacity=16, fingerprint="spec-abc")
    assert str(path) in str(ei.value)
    assert ei.value.path == str(path)
    assert isinstance(ei.value, ValueError)


def test_not_a_state_file_npz(tmp_path):
    p = tmp_path / "other.npz"
    np.savez(p, rows=np.zeros((2, S), np.float32))
    with pytest.raises(StateFileError, match="missing") as ei:
        StateTable.load(p, init_row())
    assert str(p) in str(ei.value)


def test_wrong_fingerprint_raises_state_file_error(tmp_path):
    _, path = make_saved_table(tmp_path, fingerprint="spec-abc")
    with pytest.raises(StateFileError, match="fingerprint") as ei:
        StateTable.load(path, init_row(), capacity=16, fingerprint="spec-xyz")
    assert str(path) in str(ei.value)
    assert "spec-abc" in str(ei.value) and "spec-xyz" in str(ei.value)


def test_wrong_state_size_raises_state_file_error(tmp_path):
    _, path = make_saved_table(tmp_path)
    with pytest.raises(StateFileError, match="state size") as ei:
        StateTable.load(path, np.zeros(S + 1, np.float32), capacity=16, fingerprint="spec-abc")
    assert str(path) in str(ei.value)


def test_failed_restore_leaves_table_unchanged(tmp_path):
    _, path = make_saved_table(tmp_path, fingerprint="other")
    t = StateTable(init_row(), capacity=4, fingerprint="mine")
    t.slots(["keep"])
    fill(t, "keep", 8.0)
    with pytest.raises(StateFileError):
        t.restore(path)
    assert t.ids() == ["keep"]
    np.testing.assert_array_equal(row(t, "keep"), np.full(S, 8.0, np.float32))


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        StateTable.load(tmp_path / "absent.npz", init_row())


def test_constructor_validation():
    with pytest.raises(ValueError):
        StateTable(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError):
        StateTable(init_row(), capacity=0)
    with pytest.raises(ValueError):
        StateTable(init_row(), reset_after_s=-1.0)
    with pytest.raises(ValueError):
        StateTable(np.array([np.nan], np.float32))


def test_engine_module_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, edge.engine.state_table; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_non_finite_state_is_never_written_nor_resumed(tmp_path):
    """A NaN/Inf row is refused by save (the file is not replaced) and by restore, even in a file whose
    checksum is right (written by hand here, as an older runtime could have)."""
    from edge.engine import state_table as st
    t, path = make_saved_table(tmp_path)
    before = path.read_bytes()
    fill(t, "a", np.array([0.0, np.nan, 0.0, 0.0, 0.0], np.float32))
    with pytest.raises(StateFileError, match="stream 'a' holds a non-finite state"):
        t.save(path)
    assert path.read_bytes() == before
    ids = np.array(["x", "y"], dtype=np.str_)
    rows = np.zeros((2, S), np.float32)
    rows[1, 2] = np.inf
    last = np.full(2, np.nan)
    bad = tmp_path / "old.npz"
    np.savez(bad, format_version=np.array(st.FORMAT_VERSION), fingerprint=np.array("spec-abc"),
             state_size=np.array(S), ids=ids, rows=rows, last_seen=last,
             checksum=np.array(st._checksum(st.FORMAT_VERSION, "spec-abc", S, ids, rows, last)))
    u = StateTable(init_row(), capacity=16, fingerprint="spec-abc")
    u.slots(["kept"])
    with pytest.raises(StateFileError, match="stream 'y' holds a non-finite state .*refused"):
        u.restore(bad)
    assert u.ids() == ["kept"]
