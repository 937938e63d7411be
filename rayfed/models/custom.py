"""A user's own model, named by a Hydra ``_target_`` and checked before Ray starts.

Built-in models come from the registry by name; a user's ``nn.Module`` comes in
as a dotted import path, the convention of Hydra's ``instantiate``
(``model._target_=my_pkg.nets.MyNet``). Everything here runs in the driver
before any actor exists, so a typo or a wrong output size costs a second, not
a cluster start: :func:`model_problems` collects every problem at once
(the Opacus validator style) and names the config key in each.

Under record-level DP (DP-SGD, Abadi et al. 2016) Opacus needs per-sample
gradients, so layers that mix samples in a batch (BatchNorm) or that it has no
per-sample rule for (``nn.LSTM``) are rejected up front with their names.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from rayfed.errors import ConfigError

TARGET_KEY = "model._target_"
KWARGS_KEY = "model.kwargs"
# A batch of two: one sample would hide a model that squeezes the batch dimension.
_PROBE_BATCH = 2


def _module_error(target: str, module_name: str, exc: Exception) -> str:
    missing = getattr(exc, "name", None)
    own = missing is not None and (missing == module_name or module_name.startswith(f"{missing}."))
    if isinstance(exc, ModuleNotFoundError) and own:
        return (f"{TARGET_KEY}={target}: module {module_name!r} was not found ({exc}); check "
                "the spelling, and put its folder on PYTHONPATH (on a cluster, ship it with the "
                "job's runtime_env working_dir or py_modules)")
    if isinstance(exc, ModuleNotFoundError):
        # The user's module exists but one of its own imports is not installed.
        return (f"{TARGET_KEY}={target}: module {module_name!r} was found, but it imports "
                f"{missing!r}, which is not installed ({exc}); install it where the driver "
                "and the participants run")
    return (f"{TARGET_KEY}={target}: module {module_name!r} was found, but importing it "
            f"raised {type(exc).__name__}: {exc}; fix that module")


def import_target(target: str, *, key: str = TARGET_KEY) -> Callable[..., Any]:
    """The callable that the dotted path ``target`` names (``pkg.module.Attr``).

    Raises :class:`ConfigError` naming ``key`` and saying which step failed: the
    module was not found, the attribute is missing from it, or it is not callable.
    """
    module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise ConfigError([f"{key}={target!r} is not a dotted import path; write it as "
                           "'package.module.ClassName', e.g. my_pkg.nets.MyNet"])
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a user's module can raise anything while it imports
        raise ConfigError([_module_error(target, module_name, exc)]) from exc
    try:
        obj = getattr(module, attr)
    except AttributeError as exc:
        public = sorted(n for n in vars(module) if not n.startswith("_"))
        raise ConfigError([f"{key}={target}: module {module_name!r} has no attribute "
                           f"{attr!r}; it defines {public[:20]}"]) from exc
    if not callable(obj):
        raise ConfigError([f"{key}={target}: {attr!r} in {module_name!r} is a "
                           f"{type(obj).__name__}, not a class or function; point "
                           f"{key} at an nn.Module class or a factory that returns one"])
    return obj


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # some builtins have no signature
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def build_custom_model(
    target: str | Callable[..., Any],
    kwargs: Mapping[str, Any] | None = None,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int | None = None,
) -> nn.Module:
    """Build the user's model as ``target(**kwargs)``, seeded like ``build_model``.

    ``num_classes`` and ``input_shape`` are passed too when the callable takes
    parameters of those names (or ``**kwargs``) and ``kwargs`` does not set them,
    so a model can size its head from the data set instead of hard-coding it.
    ``target`` may also be the class or factory itself (the Python API's path).
    """
    fn = import_target(target) if isinstance(target, str) else target
    label = target if isinstance(target, str) else getattr(fn, "__qualname__", repr(fn))
    call_kwargs = dict(kwargs or {})
    for name, value in (("num_classes", num_classes), ("input_shape", tuple(input_shape))):
        if name not in call_kwargs and _accepts(fn, name):
            call_kwargs[name] = value
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            model = fn(**call_kwargs)
        except Exception as exc:
            raise ConfigError([f"{TARGET_KEY}={label}: calling it with {KWARGS_KEY}="
                               f"{call_kwargs} failed with {type(exc).__name__}: {exc}; fix "
                               f"{KWARGS_KEY} to match its signature {_signature(fn)}"]) from exc
    if not isinstance(model, nn.Module):
        raise ConfigError([f"{TARGET_KEY}={label} returned a {type(model).__name__}, not a "
                           "torch.nn.Module; point it at an nn.Module class or a factory "
                           "that returns one"])
    return model


def _signature(fn: Callable[..., Any]) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(unknown)"


def _forward_problems(model: nn.Module, input_shape: tuple[int, ...], num_classes: int,
                      label: str) -> list[str]:
    shape = (_PROBE_BATCH, *input_shape)
    gen = torch.Generator().manual_seed(0)
    was_training = model.training
    try:
        # eval(): a probe must not move BatchNorm running statistics or draw dropout.
        model.eval()
        with torch.no_grad():
            out = model(torch.randn(shape, generator=gen))
    except Exception as exc:
        return [f"{label} fails on a batch of shape {shape} (the data set's "
                f"input shape {tuple(input_shape)} with a batch dimension) with "
                f"{type(exc).__name__}: {exc}; make its first layer take that shape"]
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        return [f"{label} returns a {type(out).__name__}, not a tensor of "
                f"logits of shape (batch, {num_classes}); return the logits only"]
    if tuple(out.shape) != (_PROBE_BATCH, num_classes):
        return [f"{label} returns outputs of shape {tuple(out.shape)} for a batch "
                f"of {_PROBE_BATCH}, but the data set has {num_classes} classes, so "
                f"({_PROBE_BATCH}, {num_classes}) is needed; give its last layer "
                f"{num_classes} outputs (take num_classes as a constructor argument)"]
    return []


def _opacus_problems(model: nn.Module, label: str) -> list[str]:
    # Opacus's own validate() reports each problem without the layer's name; run
    # the same per-layer validators over named modules so the message can name them.
    from opacus.utils.module_utils import trainable_modules
    from opacus.validators import ModuleValidator

    offending = [f"{name or '<root>'} ({type(mod).__name__})"
                 for name, mod in trainable_modules(model)
                 if type(mod) in ModuleValidator.VALIDATORS
                 and ModuleValidator.VALIDATORS[type(mod)](mod)]
    if not offending:
        return []
    reasons = sorted({str(e).split(".")[0] for e in ModuleValidator.validate(model)})
    return [f"{label} cannot train with record-level DP (privacy=local_dp, "
            f"Opacus DP-SGD): layer(s) {', '.join(offending)} are not supported "
            f"({'; '.join(reasons)}). Replace them (BatchNorm -> GroupNorm, nn.LSTM -> "
            "opacus.layers.DPLSTM), or return opacus.validators.ModuleValidator.fix(model) "
            "from your factory, which does those replacements"]


def model_problems(
    model: nn.Module,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    private: bool,
    target: str | None = None,
) -> list[str]:
    """Every problem that would stop ``model`` from training here, each naming the key.

    A forward pass on a random batch of two must give logits of shape
    ``(2, num_classes)``; with ``private`` (record-level DP) every layer must pass
    Opacus's ``ModuleValidator``. Pure: the model's weights and mode are unchanged.
    ``target`` (the ``model._target_`` value) names the model in the messages.
    """
    label = f"{TARGET_KEY}={target}" if target else "the model"
    problems = _forward_problems(model, tuple(input_shape), num_classes, label)
    if private:
        was_training = model.training
        model.train()  # Opacus rejects eval-mode models; the layers are what matters here
        try:
            problems += _opacus_problems(model, label)
        finally:
            model.train(was_training)
    return problems
