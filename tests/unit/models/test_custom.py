"""A user's model by ``_target_``: each failure is one clear message naming the key."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rayfed.errors import ConfigError
from rayfed.models import get_flat
from rayfed.models.custom import build_custom_model, import_target, model_problems

NETS = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, num_classes, input_shape, width=8):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()),
                                  width), nn.ReLU(), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.body(x)

class Fixed(nn.Module):  # hard-codes 3 outputs
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(30, 3)

    def forward(self, x):
        return self.fc(x)

class WithBatchNorm(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, num_classes))

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))))

def factory(depth=1, **kwargs):
    return nn.Sequential(nn.Flatten(), nn.Linear(30, kwargs["num_classes"]))

def not_a_module():
    return "oops"

WIDTH = 3
'''


@pytest.fixture
def pkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh importable module holding the nets above; returns its name."""
    name = f"user_nets_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(NETS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_import_target_returns_the_class(pkg: str) -> None:
    cls = import_target(f"{pkg}.Net")
    assert cls.__name__ == "Net" and issubclass(cls, nn.Module)


def test_missing_module_is_named(pkg: str) -> None:
    with pytest.raises(ConfigError, match=r"model\._target_=nope_pkg\.nets\.Net: module "
                                          r"'nope_pkg\.nets' was not found"):
        import_target("nope_pkg.nets.Net")


def test_missing_dependency_of_the_users_module_is_named(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "needs_dep.py").write_text("import not_installed_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"module 'needs_dep' was found, but it imports "
                                          r"'not_installed_xyz', which is not installed"):
        import_target("needs_dep.Net")


def test_broken_module_reports_its_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_syntax.py").write_text("def f(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="importing it raised SyntaxError"):
        import_target("broken_syntax.Net")


def test_missing_attribute_lists_what_the_module_defines(pkg: str) -> None:
    with pytest.raises(ConfigError, match=rf"{pkg}\.Nett: module '{pkg}' has no attribute "
                                          r"'Nett'; it defines \[.*'Net'"):
        import_target(f"{pkg}.Nett")


def test_not_callable_is_named(pkg: str) -> None:
    with pytest.raises(ConfigError, match=r"'WIDTH' .* is a int, not a class or function"):
        import_target(f"{pkg}.WIDTH")


@pytest.mark.parametrize("target", ["Net", "", ".Net", "pkg."])
def test_not_a_dotted_path(target: str) -> None:
    with pytest.raises(ConfigError, match=r"model\._target_=.* is not a dotted import path"):
        import_target(target)


def test_build_passes_num_classes_and_input_shape_when_taken(pkg: str) -> None:
    model = build_custom_model(f"{pkg}.Net", {"width": 5}, input_shape=(1, 4, 4),
                               num_classes=3, seed=0)
    assert model(torch.randn(2, 1, 4, 4)).shape == (2, 3)
    assert model.body[1].out_features == 5
    # **kwargs factories get them too.
    fac = build_custom_model(f"{pkg}.factory", None, input_shape=(30,), num_classes=4, seed=0)
    assert fac(torch.randn(2, 30)).shape == (2, 4)


def test_build_is_seeded_and_leaves_global_rng_alone(pkg: str) -> None:
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    a = get_flat(build_custom_model(f"{pkg}.Net", {}, input_shape=(30,), num_classes=2, seed=1))
    torch.testing.assert_close(torch.rand(2), expected, rtol=0, atol=0)
    b = get_flat(build_custom_model(f"{pkg}.Net", {}, input_shape=(30,), num_classes=2, seed=1))
    c = get_flat(build_custom_model(f"{pkg}.Net", {}, input_shape=(30,), num_classes=2, seed=2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_wrong_kwargs_name_the_kwargs_key_and_signature(pkg: str) -> None:
    with pytest.raises(ConfigError, match=r"model\.kwargs=.*'depth_x': 2.*TypeError.*"
                                          r"signature \(num_classes, input_shape, width=8\)"):
        build_custom_model(f"{pkg}.Net", {"depth_x": 2}, input_shape=(30,), num_classes=2)


def test_factory_returning_non_module_is_rejected(pkg: str) -> None:
    with pytest.raises(ConfigError, match=r"not_a_module returned a str, not a torch\.nn\.Module"):
        build_custom_model(f"{pkg}.not_a_module", {}, input_shape=(30,), num_classes=2)


def test_good_model_has_no_problems(pkg: str) -> None:
    model = build_custom_model(f"{pkg}.Net", {}, input_shape=(30,), num_classes=2, seed=0)
    assert model_problems(model, input_shape=(30,), num_classes=2, private=True) == []


def test_wrong_output_size_names_both_sizes_and_the_key(pkg: str) -> None:
    model = build_custom_model(f"{pkg}.Fixed", {}, input_shape=(30,), num_classes=2)
    [problem] = model_problems(model, input_shape=(30,), num_classes=2, private=False,
                               target=f"{pkg}.Fixed")
    assert f"model._target_={pkg}.Fixed returns outputs of shape (2, 3)" in problem
    assert "the data set has 2 classes, so (2, 2) is needed" in problem


def test_wrong_input_shape_is_reported_not_raised(pkg: str) -> None:
    model = build_custom_model(f"{pkg}.Fixed", {}, input_shape=(30,), num_classes=3)
    [problem] = model_problems(model, input_shape=(1, 8, 8), num_classes=3, private=False)
    assert problem.startswith("the model fails on a batch of shape (2, 1, 8, 8)")
    assert "RuntimeError" in problem


def test_batchnorm_under_record_level_dp_names_the_layer_and_the_fix(pkg: str) -> None:
    model = build_custom_model(f"{pkg}.WithBatchNorm", {}, input_shape=(1, 8, 8), num_classes=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model_problems(model, input_shape=(1, 8, 8), num_classes=4, private=False) == []
    [problem] = model_problems(model, input_shape=(1, 8, 8), num_classes=4, private=True)
    assert "layer(s) bn (BatchNorm2d) are not supported" in problem
    assert "privacy=local_dp" in problem
    assert "BatchNorm -> GroupNorm" in problem
    assert "opacus.validators.ModuleValidator.fix(model)" in problem
    # The probe must not have moved BatchNorm's running statistics.
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert model.training


def test_fixed_model_passes(pkg: str) -> None:
    from opacus.validators import ModuleValidator

    model = build_custom_model(f"{pkg}.WithBatchNorm", {}, input_shape=(1, 8, 8), num_classes=4)
    fixed = ModuleValidator.fix(model)
    assert model_problems(fixed, input_shape=(1, 8, 8), num_classes=4, private=True) == []


def test_every_problem_at_once() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(30, 5), nn.BatchNorm1d(5), nn.LSTM(5, 5))
    problems = model_problems(model, input_shape=(30,), num_classes=2, private=True)
    assert len(problems) == 2
    assert "returns a tuple, not a tensor" in problems[0]
    assert "2 (BatchNorm1d), 3 (LSTM)" in problems[1]


def test_the_model_in_docs_your_own_data_passes_the_checks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    doc = (Path(__file__).resolve().parents[3] / "docs" / "your_own_data.md").read_text()
    code = re.search(r"```python\n# ~/hospitals/my_model.py\n(.*?)```", doc, re.S)
    assert code is not None
    (tmp_path / "docs_my_model.py").write_text(code.group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_custom_model("docs_my_model.Net", {"width": 64}, input_shape=(30,),
                               num_classes=2, seed=0)
    assert model_problems(model, input_shape=(30,), num_classes=2, private=True) == []
