"""Checkpoints: exact round trips, atomic writes, checksums, and retention."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from rayfed.errors import CheckpointError
from rayfed.fl import checkpoint as ckpt
from rayfed.fl.checkpoint import MAGIC, CheckpointDir, load_checkpoint, save_checkpoint


def state(r: int = 1) -> dict:
    rng = np.random.default_rng(r)
    return {
        "server_round": r,
        "weights": rng.normal(size=50).astype(np.float32),
        "strategy": {"m": np.arange(3.0), "t": r},
        "rng": np.random.default_rng(r).bit_generator.state,
        "history": [0.1 * r, None, "ok"],
    }


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert a["server_round"] == b["server_round"]
    np.testing.assert_array_equal(a["weights"], b["weights"])
    assert a["weights"].dtype == b["weights"].dtype
    np.testing.assert_array_equal(a["strategy"]["m"], b["strategy"]["m"])
    assert a["strategy"]["t"] == b["strategy"]["t"]
    assert a["rng"] == b["rng"]
    assert a["history"] == b["history"]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_round_trip_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "c.ckpt"  # parent directories are created
    save_checkpoint(path, state(3))
    assert_same_state(load_checkpoint(path), state(3))
    assert path.read_bytes().startswith(MAGIC)
    assert leftovers(path.parent) == []


def test_restored_rng_state_continues_the_same_stream(tmp_path: Path) -> None:
    rng = np.random.default_rng(42)
    rng.random(5)
    save_checkpoint(tmp_path / "c.ckpt", {"rng": rng.bit_generator.state})
    expected = rng.random(3)
    restored = np.random.default_rng()
    restored.bit_generator.state = load_checkpoint(tmp_path / "c.ckpt")["rng"]
    np.testing.assert_array_equal(restored.random(3), expected)


def test_unpicklable_state_leaves_previous_checkpoint_intact(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    save_checkpoint(path, state(1))
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_checkpoint(path, {"lock": threading.Lock()})
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []
    assert_same_state(load_checkpoint(path), state(1))


def test_failing_rename_leaves_previous_file_and_no_temp(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.ckpt"
    save_checkpoint(path, state(1))
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        # The temporary file is complete and beside the target when the rename fails.
        assert Path(src).parent == tmp_path
        assert Path(src).read_bytes().startswith(MAGIC)
        raise OSError("disk yanked")

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(OSError, match="disk yanked"):
        save_checkpoint(path, state(2))
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.ckpt"]


def test_interrupted_write_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.ckpt"
    save_checkpoint(path, state(1))
    before = path.read_bytes()

    def interrupt(fd: int) -> None:
        raise KeyboardInterrupt  # BaseException too: a Ctrl-C mid-write cleans up

    monkeypatch.setattr(ckpt.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, state(2))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["digest", "payload_start", "payload_end"])
def test_flipped_byte_is_reported_as_corrupt(tmp_path: Path, where: str) -> None:
    path = tmp_path / "c.ckpt"
    save_checkpoint(path, state(1))
    blob = bytearray(path.read_bytes())
    offset = {"digest": len(MAGIC) + 5, "payload_start": len(MAGIC) + 64,
              "payload_end": len(blob) - 1}[where]
    blob[offset] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


@pytest.mark.parametrize("blob", [
    b"",
    b"PICKLE" + bytes(64),
    MAGIC[:-1] + b"X" + bytes(64),
    MAGIC + bytes(63),  # too short to hold the digest and the HMAC
], ids=["empty", "foreign", "wrong_magic", "truncated"])
def test_bad_header_is_rejected(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "c.ckpt"
    path.write_bytes(blob)
    with pytest.raises(CheckpointError, match="bad header"):
        load_checkpoint(path)


def test_missing_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "absent.ckpt")


def test_checkpoint_dir_keeps_only_the_newest(tmp_path: Path) -> None:
    cd = CheckpointDir(tmp_path / "ck", keep_last=2)
    assert cd.rounds() == []
    assert cd.latest() is None
    for r in (1, 2, 3, 4, 5):
        written = cd.save(r, state(r))
        assert written == tmp_path / "ck" / f"round_{r:06d}.ckpt"
    assert cd.rounds() == [4, 5]
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "round_000004.ckpt", "round_000005.ckpt"]
    latest = cd.latest()
    assert latest is not None
    assert_same_state(latest, state(5))


def test_checkpoint_dir_orders_rounds_numerically_and_ignores_strangers(tmp_path: Path) -> None:
    cd = CheckpointDir(tmp_path, keep_last=3)
    for r in (9, 10, 100):
        cd.save(r, {"server_round": r})
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "round_12.ckpt").write_text("x")  # not six digits
    (tmp_path / ".round_000200.ckpt.abc.tmp").write_text("x")
    assert cd.rounds() == [9, 10, 100]
    assert cd.latest() == {"server_round": 100}
    cd.save(101, {"server_round": 101})
    assert cd.rounds() == [10, 100, 101]
    assert (tmp_path / "notes.txt").exists()


def test_checkpoint_dir_keep_last_one(tmp_path: Path) -> None:
    cd = CheckpointDir(tmp_path, keep_last=1)
    for r in range(1, 4):
        cd.save(r, {"server_round": r})
        assert cd.rounds() == [r]
    assert os.listdir(tmp_path) == ["round_000003.ckpt"]
