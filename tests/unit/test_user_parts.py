"""Issue #16: a user's model and files checked up front, in one message, before Ray.

``rayfed.plan.resolve`` runs ``validate`` and then builds the user's model on the
data's shape; every problem below is a ``ConfigError`` naming the key, raised
without starting Ray (these tests never start it).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rayfed.config import (
    DatasetConfig,
    ModelConfig,
    ParticipantConfig,
    PrivacyConfig,
    RuntimeConfig,
    open_dict_overrides,
    validate,
)
from rayfed.data.make_sites import make_sites
from rayfed.errors import ConfigError
from rayfed.plan import UserParts, resolve
from rayfed.train.device import device_plan
from tests.conftest import small_config

MODELS = '''
import math

from torch import nn


class Wide(nn.Module):
    def __init__(self, num_classes, input_shape):
        super().__init__()
        self.fc = nn.Sequential(nn.Flatten(),  # one output too many:
                                nn.Linear(math.prod(input_shape), num_classes + 1))

    def forward(self, x):
        return self.fc(x)


def batchnorm_net(num_classes, input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 16), nn.BatchNorm1d(16),
                         nn.ReLU(),
                         nn.Linear(16, num_classes))


def good(num_classes, input_shape, width=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(),
                         nn.Linear(width, num_classes))
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "user_nets_16.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_nets_16"
    sys.modules.pop("user_nets_16", None)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sites")
    make_sites(str(out), sites=3, seed=0)
    return out


def files_dataset(sites: Path) -> DatasetConfig:
    return DatasetConfig(name="files", train_path=f"{sites}/site_{{participant_id}}/train.csv",
                         test_path=f"{sites}/test.csv", schema_path=f"{sites}/schema.yaml")


def custom(target: str, **kwargs: object) -> ModelConfig:
    return ModelConfig(name="custom", _target_=target, kwargs=dict(kwargs))


def problems_of(cfg, **user) -> list[str]:
    with pytest.raises(ConfigError) as err:
        resolve(cfg, user=UserParts(**user) if user else None)
    return err.value.problems


def test_a_target_that_does_not_import_names_the_key(tmp_path: Path) -> None:
    (p,) = problems_of(small_config(tmp_path, model=custom("no_such_pkg_16.nets.Net")))
    assert p.startswith("model._target_=no_such_pkg_16.nets.Net: module 'no_such_pkg_16.nets' "
                        "was not found")
    assert "PYTHONPATH" in p and "py_modules" in p


def test_output_size_that_differs_from_the_classes_is_refused(tmp_path, user_module) -> None:
    (p,) = problems_of(small_config(tmp_path, model=custom(f"{user_module}.Wide")))
    assert "returns outputs of shape (2, 11)" in p and "10 classes" in p  # digits: 10


def test_batchnorm_under_local_dp_names_the_layer(tmp_path, user_module) -> None:
    cfg = small_config(tmp_path, model=custom(f"{user_module}.batchnorm_net"),
                       privacy=PrivacyConfig(name="local_dp", target_epsilon=8.0,
                                             delta=1e-5))
    problems = [p for p in problems_of(cfg) if "record-level DP" in p]
    assert len(problems) == 1
    assert "layer(s) 2 (BatchNorm1d)" in problems[0]
    assert "ModuleValidator.fix" in problems[0]


def test_config_and_model_problems_come_in_one_message(tmp_path, user_module) -> None:
    cfg = small_config(tmp_path, model=custom(f"{user_module}.Wide"), fl={"rounds": 0})
    problems = problems_of(cfg)
    assert any(p.startswith("fl.rounds=0") for p in problems)
    assert any("returns outputs of shape (2, 11)" in p for p in problems)


def test_a_good_user_model_resolves_with_its_kwargs(tmp_path, user_module) -> None:
    plan = resolve(small_config(tmp_path, model=custom(f"{user_module}.good", width=5)))
    # Built-in data: the hosts take the shape from their partition, as before.
    assert plan.data.source is None and plan.config.model.kwargs == {"width": 5}


def test_keys_that_cannot_take_effect_are_errors_naming_them(tmp_path) -> None:
    cfg = small_config(tmp_path, dataset={"train_path": "/d/site_{participant_id}.csv"},
                       model={"kwargs": {"width": 3}})
    problems = validate(cfg)
    assert any(p.startswith("dataset.train_path='/d/site_{participant_id}.csv' only takes "
                            "effect with dataset=files") for p in problems)
    assert any(p.startswith("model.kwargs={'width': 3} only takes effect with model=custom")
               for p in problems)


def test_files_plan_comes_from_the_schema_file_without_opening_a_site(tmp_path, sites,
                                                                      user_module) -> None:
    cfg = small_config(tmp_path, dataset=files_dataset(sites),
                       model=custom(f"{user_module}.good"))
    plan = resolve(cfg)
    assert plan.data.input_shape == (30,) and plan.data.num_classes == 2
    assert plan.data.source.classes == ("malignant", "benign")
    assert plan.data.source.scaling["mean_radius"][1] > 0
    wrong = replace(cfg, dataset=replace(cfg.dataset, label_column="outcome"))
    assert any("dataset.label_column='outcome' differs from label_column='diagnosis'" in p
               for p in problems_of(wrong))


def test_files_without_a_declared_shape_say_what_to_declare(tmp_path, sites) -> None:
    ds = DatasetConfig(name="files", train_path=f"{sites}/site_{{participant_id}}/train.csv",
                       label_column="diagnosis", classes=["malignant", "benign"])
    (p,) = validate(small_config(tmp_path, dataset=ds))
    assert "dataset.numeric" in p and "dataset.schema_path" in p


def test_participant_resources_need_dedicated_placement_and_the_placeholder(tmp_path) -> None:
    cfg = small_config(tmp_path, runtime=RuntimeConfig(
        placement="pooled", participant_resources={"site": 1}))
    problems = validate(cfg)
    assert any("set runtime.placement=dedicated" in p for p in problems)
    assert any("runtime.participant_resources key 'site' must contain {participant_id}" in p
               for p in problems)


def test_dict_keys_take_plain_overrides_and_the_quoted_site_template(tmp_path) -> None:
    from rayfed.api import compose

    cfg = compose(["runtime.placement=dedicated", "model=custom", "model._target_=a.B",
                   "model.kwargs.width=256",
                   "runtime.participant_resources={'site_{participant_id}': 1}"])
    assert cfg.runtime.participant_resources == {"site_{participant_id}": 1}
    assert cfg.model.kwargs == {"width": 256}

    assert open_dict_overrides(["model.kwargs.width=256", "+model.kwargs.depth=2", "fl.lr=1",
                                "runtime.participant_resources={'site_{participant_id}': 1}"]) == [
        "++model.kwargs.width=256", "+model.kwargs.depth=2", "fl.lr=1",
        "++runtime.participant_resources={site_\\{participant_id\\}: 1}"]


# -- participants on GPUs: the decisions, checked on CPU ---------------------------

def test_device_auto_falls_back_to_cpu_with_one_note() -> None:
    plan = device_plan("auto", precision="bf16", cuda_available=False)
    assert plan.device == "cpu" and plan.autocast_dtype is torch.bfloat16
    assert not plan.amp.use_grad_scaler
    assert plan.note is not None and "training on CPU" in plan.note
    assert device_plan("auto", precision="fp32", cuda_available=True).device == "cuda"
    assert device_plan("auto", precision="fp32", cuda_available=True).note is None


def test_device_cuda_without_cuda_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"participant\.device=cuda"):
        device_plan("cuda", precision="fp32", cuda_available=False)


def test_fp16_uses_a_grad_scaler_on_cuda_and_is_refused_on_cpu() -> None:
    plan = device_plan("cuda", precision="fp16", cuda_available=True)
    assert plan.autocast_dtype is torch.float16 and plan.amp.use_grad_scaler
    assert device_plan("cuda", precision="fp32", cuda_available=True).autocast_dtype is None
    with pytest.raises(ConfigError, match=r"precision=fp16 needs CUDA"):
        device_plan("auto", precision="fp16", cuda_available=False)


def test_gpu_config_rules(tmp_path) -> None:
    cfg = small_config(tmp_path, participant=ParticipantConfig(device="cuda"))
    assert any(p.startswith("participant.device=cuda needs runtime.num_gpus_per_actor > 0")
               for p in validate(cfg))
    cpu16 = small_config(tmp_path, participant=ParticipantConfig(device="cpu",
                                                                 precision="fp16"))
    assert any("participant.precision=fp16 needs CUDA" in p for p in validate(cpu16))
    ok = small_config(tmp_path, participant=ParticipantConfig(device="cuda"),
                      runtime={"num_gpus_per_actor": 0.25})
    assert validate(ok) == []
