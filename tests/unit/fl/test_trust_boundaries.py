"""Issue #9, I3: nothing at a trust boundary deserialises untrusted bytes with pickle.

An AST scan of the package source fails on any call that can execute code while
reading bytes (``pickle.load(s)``, ``Unpickler``, ``cloudpickle``/``dill``/``joblib``
/``marshal`` loads, ``torch.load`` without ``weights_only=True``, ``np.load`` with
``allow_pickle=True``, ``yaml.load``/``unsafe_load``). Crafted files that would run
code if unpickled are refused with a clear error and run nothing.
"""

from __future__ import annotations

import ast
import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from rayfed.errors import CheckpointError
from rayfed.fl import safe_format
from rayfed.fl.checkpoint import MAGIC, frame, load_checkpoint, load_key, save_checkpoint
from rayfed.fl.participant import LocalTraining, Participant
from rayfed.types import Failure, FitIns, RoundResult

PACKAGE = Path(__file__).resolve().parents[3] / "rayfed"
UNSAFE_MODULES = {"pickle", "cloudpickle", "dill", "joblib", "marshal", "shelve", "_pickle"}
UNSAFE_FUNCS = {"load", "loads", "Unpickler", "open"}


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_calls(source: str) -> list[tuple[int, str]]:
    """(line, call) of every code-executing deserialisation in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in UNSAFE_MODULES:
            names = {a.name for a in node.names} & UNSAFE_FUNCS
            found += [(node.lineno, f"from {node.module} import {n}") for n in sorted(names)]
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        f = node.func
        owner = f.value.id if isinstance(f.value, ast.Name) else None
        call = f"{owner}.{f.attr}"
        if owner in UNSAFE_MODULES and f.attr in UNSAFE_FUNCS:
            found.append((node.lineno, call))
        elif owner == "torch" and f.attr == "load" and not _is_const(
                _kw(node, "weights_only"), True):
            found.append((node.lineno, "torch.load without weights_only=True"))
        elif owner in ("np", "numpy") and f.attr == "load" and _is_const(
                _kw(node, "allow_pickle"), True):
            found.append((node.lineno, "np.load(allow_pickle=True)"))
        elif owner == "yaml" and f.attr in ("load", "unsafe_load", "full_load"):
            found.append((node.lineno, call))
    return found


def test_the_scan_finds_what_it_should() -> None:
    src = ("import pickle, torch, numpy as np\nfrom pickle import loads\n"
           "pickle.loads(b)\ntorch.load(f)\ntorch.load(f, weights_only=False)\n"
           "torch.load(f, weights_only=True)\nnp.load(f, allow_pickle=True)\nnp.load(f)\n"
           "pickle.dumps(x)\n")
    assert [line for line, _ in unsafe_calls(src)] == [2, 3, 4, 5, 7]


def test_no_code_executing_deserialisation_in_the_package() -> None:
    found = {f"{p.relative_to(PACKAGE.parent)}:{line}: {call}"
             for p in sorted(PACKAGE.rglob("*.py"))
             for line, call in unsafe_calls(p.read_text())}
    assert not found, sorted(found)


class _Payload:
    """Unpickling this runs ``os.system``: the classic pickle exploit."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _framed(payload: bytes, magic: bytes = MAGIC) -> bytes:
    # A valid header, checksum and HMAC: an attacker who holds the key gets past
    # the header, and the payload must still be refused on its own.
    if magic == MAGIC:
        return frame(payload, load_key())
    return magic + hashlib.sha256(payload).digest() + payload


@pytest.mark.parametrize("magic", [MAGIC, b"RAYFEDCK1\n"], ids=["current", "old_pickled"])
def test_crafted_pickle_checkpoint_is_refused_and_runs_nothing(tmp_path: Path,
                                                               magic: bytes) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"weights": _Payload(marker)})
    path = tmp_path / "round_000001.ckpt"
    path.write_bytes(_framed(evil, magic))
    with pytest.raises(CheckpointError, match=r"refused|old pickled format"):
        load_checkpoint(path)
    assert not marker.exists()
    # Unpickling the same bytes would have run the command: the test can fail.
    pickle.loads(evil)
    assert marker.exists()


def test_npz_with_an_object_array_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.savez(buf, tree=np.frombuffer(b'{"$t": "nd", "k": "a0"}', np.uint8),
             a0=np.array([object()], dtype=object))
    path = tmp_path / "c.ckpt"
    path.write_bytes(_framed(buf.getvalue()))
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)


def test_server_state_round_trips_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    history = [RoundResult(1, "completed", "ok", 4, 3, 1, 0, 0.5, 10, 20, train_loss=0.3,
                           failures=(Failure(2, 1, "rejected", "update rejected: nan"),),
                           num_rejected=1)]
    state = {"server_round": 1, "weights": rng.normal(size=9).astype(np.float32),
             "rng": rng.bit_generator.state, "client_states": {3: b"\x00\x01", 5: b""},
             "history": history, "strategy": {"m": None, "step": np.int64(4)},
             "privacy": {"record": {1: 0.5}}, "pair": (1, "a")}
    save_checkpoint(tmp_path / "c.ckpt", state)
    back = load_checkpoint(tmp_path / "c.ckpt")
    np.testing.assert_array_equal(back["weights"], state["weights"])
    assert back["weights"].dtype == np.float32
    assert back["rng"] == state["rng"] and back["history"] == history
    assert back["client_states"] == {3: b"\x00\x01", 5: b""}
    assert back["strategy"] == {"m": None, "step": 4} and back["pair"] == (1, "a")
    assert back["privacy"] == {"record": {1: 0.5}}


def test_unregistered_objects_are_not_written(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="cannot be stored safely"):
        safe_format.dumps({"x": _Payload(tmp_path / "m")})


def test_crafted_participant_state_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    """The carried state travels through the server; a participant refuses a pickle."""
    from rayfed.data.federated import ClientData
    from rayfed.models import ModelSpec, build_model, get_flat

    marker = tmp_path / "pwned"
    model = build_model(ModelSpec("logreg", (4,), 3))
    data = ClientData(0, torch.randn(8, 4), torch.randint(0, 3, (8,)), torch.zeros(0, 4),
                      torch.zeros(0, dtype=torch.long))
    p = Participant(data, model, LocalTraining(epochs=1, batch_size=4, lr=0.1))
    evil = pickle.dumps({"optimizer": _Payload(marker)})
    with pytest.raises(safe_format.UnsafeFormatError, match="not a safe-format archive"):
        p.fit(get_flat(model), FitIns(0, 1, 0, state=evil))
    assert not marker.exists()
