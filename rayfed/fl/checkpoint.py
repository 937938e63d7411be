"""Atomic, checksummed checkpoints of the server's state.

A checkpoint is written to a temporary file in the same directory, flushed to
disk, then renamed over the target, so a crash mid-write leaves the previous
checkpoint intact. A SHA-256 of the payload sits in the header; a corrupt file
fails loudly instead of being half-loaded.

The payload is :mod:`rayfed.fl.safe_format` (JSON and raw arrays), never a
pickle: a checkpoint directory may be shared or restored from elsewhere, and
unpickling a crafted file runs code. The checksum detects corruption only, not
tampering (anyone can recompute it). Files of the first, pickled format
(``RAYFEDCK1``) are refused with a message, not read.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from rayfed.errors import CheckpointError
from rayfed.fl import safe_format

MAGIC = b"RAYFEDCK2\n"
# The first format pickled its payload; it is refused, never unpickled.
_PICKLED_MAGIC = b"RAYFEDCK1\n"
_ROUND_FILE = re.compile(r"^round_(\d{6})\.ckpt$")


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    payload = safe_format.dumps(state)
    write_atomic(path, MAGIC + hashlib.sha256(payload).digest() + payload)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    head = len(MAGIC)
    if blob.startswith(_PICKLED_MAGIC):
        raise CheckpointError(f"{path} is a checkpoint of the old pickled format, which is "
                              "not loaded because unpickling can execute code; start a "
                              "fresh run (resume=false)")
    if not blob.startswith(MAGIC) or len(blob) < head + 32:
        raise CheckpointError(f"{path} is not a rayfed checkpoint (bad header); delete it "
                              "or point resume at another checkpoint")
    digest, payload = blob[head : head + 32], blob[head + 32 :]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"checkpoint {path} is corrupt (checksum mismatch); delete it "
                              "to resume from the previous round's checkpoint")
    try:
        state = safe_format.loads(payload)
    except safe_format.UnsafeFormatError as exc:
        raise CheckpointError(f"checkpoint {path} was refused: {exc}; it was not written by "
                              "rayfed (or was tampered with), so nothing in it is loaded") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict")
    return state


class CheckpointDir:
    """``<dir>/round_000007.ckpt`` files, keeping the newest ``keep_last``."""

    def __init__(self, directory: Path, *, keep_last: int) -> None:
        self.directory = Path(directory)
        self.keep_last = keep_last

    def rounds(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        found = (_ROUND_FILE.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def path(self, server_round: int) -> Path:
        return self.directory / f"round_{server_round:06d}.ckpt"

    def save(self, server_round: int, state: dict[str, Any]) -> Path:
        # A writer killed mid-write (SIGKILL, power loss) leaves its temporary file
        # behind; one driver writes a run's directory, so any found now is dead.
        for leftover in self.directory.glob(".round_*.ckpt.*.tmp"):
            leftover.unlink(missing_ok=True)
        target = self.path(server_round)
        save_checkpoint(target, state)
        for old in self.rounds()[: -self.keep_last]:
            self.path(old).unlink(missing_ok=True)
        return target

    def latest(self) -> dict[str, Any] | None:
        rounds = self.rounds()
        return load_checkpoint(self.path(rounds[-1])) if rounds else None
