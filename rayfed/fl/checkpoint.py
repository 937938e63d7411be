"""Atomic, checksummed and authenticated checkpoints of the server's state.

A checkpoint is written to a temporary file in the same directory, flushed to
disk, then renamed over the target, so a crash mid-write leaves the previous
checkpoint intact. The header holds a SHA-256 of the payload, so a corrupt file
fails loudly instead of being half-loaded, and an HMAC-SHA256 of it (RFC 2104)
under a key kept *outside* the checkpoint directory (``checkpoint.key_file``,
by default a per-user file created with mode 0600), so a checkpoint that was
edited (a ledger emptied, a budget raised) is refused: the checksum alone
catches accidents, anyone can recompute it.

The payload is :mod:`rayfed.fl.safe_format` (JSON and raw arrays), never a
pickle: a checkpoint directory may be shared or restored from elsewhere, and
unpickling a crafted file runs code. Files of earlier formats (``RAYFEDCK1``
pickled, ``RAYFEDCK2`` unauthenticated) are refused with a message, not read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rayfed.errors import CheckpointError
from rayfed.fl import safe_format

MAGIC = b"RAYFEDCK3\n"
# The first format pickled its payload; it is refused, never unpickled. The
# second carried no HMAC, so nothing in it can be trusted not to be edited.
_PICKLED_MAGIC = b"RAYFEDCK1\n"
_UNAUTHENTICATED_MAGIC = b"RAYFEDCK2\n"
_DIGEST = 32
KEY_ENV = "RAYFED_CHECKPOINT_KEY_FILE"
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


def default_key_file() -> Path:
    return Path(os.environ.get(KEY_ENV) or Path.home() / ".config" / "rayfed" / "checkpoint.key")


def load_key(key_file: Path | str | None = None) -> bytes:
    """The checkpoint key: read from ``key_file`` (or the default), created with
    mode 0600 on first use. A key file others can read is refused."""
    path = Path(key_file) if key_file else default_key_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    if path.stat().st_mode & 0o077:
        raise CheckpointError(f"checkpoint key file {path} is readable by other users; "
                              f"run `chmod 600 {path}` (anyone who can read it can forge "
                              "checkpoints)")
    key = path.read_text().strip()
    if len(key) < 32:
        raise CheckpointError(f"checkpoint key file {path} holds fewer than 32 characters; "
                              "delete it to have a new key made, or put a long random key in it")
    return key.encode()


def frame(payload: bytes, key: bytes) -> bytes:
    """MAGIC, SHA-256 (corruption), HMAC-SHA256 under ``key`` (tampering), payload."""
    return (MAGIC + hashlib.sha256(payload).digest()
            + hmac.new(key, payload, hashlib.sha256).digest() + payload)


def save_checkpoint(path: Path, state: dict[str, Any], *, key: bytes | None = None) -> None:
    write_atomic(path, frame(safe_format.dumps(state), key or load_key()))


def load_checkpoint(path: Path, *, key: bytes | None = None) -> dict[str, Any]:
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    head = len(MAGIC)
    if blob.startswith(_PICKLED_MAGIC):
        raise CheckpointError(f"{path} is a checkpoint of the old pickled format, which is "
                              "not loaded because unpickling can execute code; start a "
                              "fresh run (resume=false)")
    if blob.startswith(_UNAUTHENTICATED_MAGIC):
        raise CheckpointError(f"{path} is a checkpoint of the earlier unauthenticated format "
                              "(no HMAC), so it cannot be told apart from an edited one; "
                              "start a fresh run (resume=false)")
    if not blob.startswith(MAGIC) or len(blob) < head + 2 * _DIGEST:
        raise CheckpointError(f"{path} is not a rayfed checkpoint (bad header); delete it "
                              "or point resume at another checkpoint")
    digest, tag = blob[head : head + _DIGEST], blob[head + _DIGEST : head + 2 * _DIGEST]
    payload = blob[head + 2 * _DIGEST :]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"checkpoint {path} is corrupt (checksum mismatch); delete it "
                              "to resume from the previous round's checkpoint")
    if not hmac.compare_digest(hmac.new(key or load_key(), payload, hashlib.sha256).digest(),
                               tag):
        raise CheckpointError(f"checkpoint {path} does not verify under this user's "
                              f"checkpoint key ({default_key_file() if key is None else 'given'}):"
                              " it was edited, or written by someone else; it is refused. "
                              "Start a fresh run (resume=false)")
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

    def __init__(self, directory: Path, *, keep_last: int, key: bytes | None = None) -> None:
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.key = key

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
        save_checkpoint(target, state, key=self.key)
        for old in self.rounds()[: -self.keep_last]:
            self.path(old).unlink(missing_ok=True)
        return target

    def latest(self) -> dict[str, Any] | None:
        rounds = self.rounds()
        return load_checkpoint(self.path(rounds[-1]), key=self.key) if rounds else None


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def differing_keys(mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """``key: theirs -> mine`` for every leaf that differs between two configs."""
    a, b = _flatten(mine), _flatten(theirs)
    return [f"{k}: {b.get(k, '<absent>')!r} -> {a.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


class RunCheckpoints:
    """The checkpoint directories of one run name: ``<root>/<run id>/round_*.ckpt``.

    Each fresh run gets its own directory (a run never overwrites another's), with
    ``run.json`` recording its config and config hash; ``LATEST`` names the newest.
    ``resume=true`` continues the most recent run whose config hash matches.
    """

    def __init__(self, directory: Path, *, keep_last: int, key: bytes | None = None) -> None:
        self.rounds = CheckpointDir(directory, keep_last=keep_last, key=key)

    @property
    def directory(self) -> Path:
        return self.rounds.directory

    @classmethod
    def open(cls, root: Path, *, config: Any, config_hash: str, keep_last: int,
             key: bytes, resume: bool) -> tuple[RunCheckpoints, dict[str, Any] | None]:
        """Resume the latest matching run under ``root``, or start a fresh one.

        ``config``: the run's config dataclass, kept as JSON in ``run.json`` so that a
        resume that matches no run can say which keys differ."""
        config = json.loads(json.dumps(asdict(config), default=str))
        if resume:
            return cls.resume(root, config=config, config_hash=config_hash,
                              keep_last=keep_last, key=key)
        run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{config_hash[:8]}"
        return cls.start(root, config=config, config_hash=config_hash, keep_last=keep_last,
                         run_id=run_id, key=key), None

    @classmethod
    def start(cls, root: Path, *, config: dict[str, Any], config_hash: str,
              keep_last: int, run_id: str, key: bytes | None = None) -> RunCheckpoints:
        """A fresh run's directory under ``root``."""
        run_dir, n = run_id, 0
        while (root / run_dir).exists():
            n += 1
            run_dir = f"{run_id}.{n}"
        ckpt = cls(root / run_dir, keep_last=keep_last, key=key)
        ckpt.directory.mkdir(parents=True, exist_ok=True)
        write_atomic(ckpt.directory / "run.json", safe_format.dumps(
            {"config_hash": config_hash, "config": config}))
        write_atomic(root / "LATEST", run_dir.encode())
        return ckpt

    @classmethod
    def resume(cls, root: Path, *, config: dict[str, Any], config_hash: str,
               keep_last: int, key: bytes | None = None) -> tuple[RunCheckpoints, dict[str, Any]]:
        """The most recent run under ``root`` with this config, and its latest state."""
        runs = sorted((p for p in root.glob("*/run.json") if p.is_file()),
                      key=lambda p: p.stat().st_mtime, reverse=True) if root.is_dir() else []
        if not runs:
            raise CheckpointError(f"resume=true but there is no checkpoint under {root}; "
                                  "run once without resume first, or fix checkpoint.dir "
                                  "and name")
        latest_config: dict[str, Any] = {}
        for meta_path in runs:
            meta = safe_format.loads(meta_path.read_bytes())
            if not latest_config:
                latest_config = meta.get("config", {})
            if meta.get("config_hash") != config_hash:
                continue
            ckpt = cls(meta_path.parent, keep_last=keep_last, key=key)
            state = ckpt.rounds.latest()
            if state is None:
                raise CheckpointError(f"resume=true but {ckpt.directory} holds no completed "
                                      "round yet; start without resume")
            return ckpt, state
        diff = differing_keys(config, latest_config)
        shown = "; ".join(diff[:12]) + (f"; and {len(diff) - 12} more" if len(diff) > 12 else "")
        raise CheckpointError(
            f"resume=true but no run under {root} has this config; the latest run "
            f"({runs[0].parent.name}) differs in: {shown}. Resume with those settings, or "
            "start a fresh run with resume=false")

    def save(self, server_round: int, state: dict[str, Any]) -> Path:
        return self.rounds.save(server_round, state)

    def latest(self) -> dict[str, Any] | None:
        return self.rounds.latest()
