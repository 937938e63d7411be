"""Up-front checks that need the data's shape: a user's model against the data.

:func:`rayfed.plan.resolve` calls these right after ``validate`` (which checks each
section on its own and never builds a model), so that one ``ConfigError`` lists
every problem before Ray starts: the ``_target_`` imports, builds, maps a batch of
the data's input shape to ``num_classes`` logits and, under ``privacy=local_dp``,
passes Opacus's ``ModuleValidator`` (layers named). The shape comes from the
declaration (``dataset=files``), the built-in data set's test split, or the
Python API's ``test_data``; the driver never opens a site's file for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rayfed.config import Config
from rayfed.data.config import CUSTOM_DATA, FILES
from rayfed.data.source import DataPlan, files_plan
from rayfed.errors import ConfigError


def _section_ok(problems: Sequence[str], *prefixes: str) -> bool:
    return not any(p.startswith(prefixes) for p in problems)


def data_plan(cfg: Config, *, own_data: bool, test_data: Any,
              config_problems: Sequence[str]) -> tuple[DataPlan, list[str]]:
    """What the driver may know about the data, and the problems only it sees.

    ``config_problems`` (``validate``'s) are not repeated here.
    """
    ds = cfg.dataset
    if own_data and ds.name != CUSTOM_DATA:
        return DataPlan(), [f"rayfed.run(participant_data=...) brings the sites' data, so "
                            f"dataset={ds.name} would be ignored; leave the dataset group "
                            "out (rayfed.run sets dataset=custom)"]
    if ds.name == FILES:
        plan, _ = files_plan(ds)  # its problems are already in validate's list
        return plan, []
    if ds.name == CUSTOM_DATA:
        if not own_data:
            return DataPlan(), ["dataset=custom is the data of rayfed.run(participant_data="
                                "...); from the command line use dataset=files"]
        if test_data is not None:
            from rayfed.data.user import as_arrays  # torch: only for the API's own data

            x, y = as_arrays(test_data() if callable(test_data) else test_data,
                             what="test_data")
            return DataPlan(None, tuple(x.shape[1:]), ds.num_classes or int(y.max()) + 1), []
        if ds.input_shape is None or ds.num_classes is None:
            return DataPlan(), ["rayfed.run(participant_data=...) without test_data: the "
                                "driver never sees the sites' data, so set dataset.input_shape "
                                "(one example's shape, e.g. [30]) and dataset.num_classes"]
        return DataPlan(None, tuple(ds.input_shape), ds.num_classes), []
    return DataPlan(), []


def _builtin_shape(cfg: Config) -> tuple[tuple[int, ...], int]:
    from rayfed.data.federated import load_test_split

    test = load_test_split(cfg.dataset)  # the same cached split the server evaluates on
    return test.input_shape, test.num_classes


def user_model_problems(cfg: Config, data: DataPlan, *,
                        factory: Callable[..., Any] | None) -> list[str]:
    """Problems of a custom model (``model._target_`` or the API's ``model=``)."""
    from rayfed.models.config import build, is_custom

    if factory is None and not is_custom(cfg.model):
        return []
    from rayfed.models.custom import model_problems  # torch: only for a custom model

    if factory is None and not cfg.model._target_:
        return []  # validate already said model._target_ is missing
    shape, classes = data.input_shape, data.num_classes
    if shape is None or classes is None:
        if cfg.dataset.name in (FILES, CUSTOM_DATA):
            return []  # data_plan or validate named what is missing
        shape, classes = _builtin_shape(cfg)
    try:
        model = build(cfg.model, input_shape=shape, num_classes=classes, seed=cfg.seed,
                      factory=factory)
    except ConfigError as exc:
        return list(exc.problems)
    label = cfg.model._target_ if factory is None else getattr(
        factory, "__qualname__", repr(factory))
    return model_problems(model, input_shape=shape, num_classes=classes,
                          private=cfg.privacy.name == "local_dp", target=label)
