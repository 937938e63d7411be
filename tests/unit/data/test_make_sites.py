"""make_sites: per-hospital CSV files that rayfed's own reader accepts and that can be learned."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from rayfed.data.files import describe_site, load_test, read_site
from rayfed.data.make_sites import make_sites
from rayfed.data.schema import FileSource, site_mismatches

REPO = Path(__file__).resolve().parents[3]


def source_for(out: Path) -> FileSource:
    schema = yaml.safe_load((out / "schema.yaml").read_text())
    return FileSource(train_path=str(out / "site_{participant_id}" / "train.csv"),
                      test_path=str(out / "test.csv"), label_column=schema["label_column"],
                      classes=tuple(schema["classes"]), numeric=tuple(schema["numeric"]),
                      scaling={c: tuple(v) for c, v in schema["scaling"].items()})


def test_command_line_writes_five_sites_and_a_test_set(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "rayfed.data.make_sites", str(tmp_path / "h"),
                           "--sites", "5", "--seed", "0"], env=env, capture_output=True,
                          text=True, check=True, timeout=120)
    out = tmp_path / "h"
    assert sorted(p.name for p in out.iterdir()) == [
        "schema.yaml", "site_0", "site_1", "site_2", "site_3", "site_4", "test.csv"]
    assert "site_{participant_id}/train.csv" in done.stdout
    src = source_for(out)
    reports = [describe_site(src, i) for i in range(5)]
    assert [r.problems for r in reports] == [()] * 5
    assert site_mismatches(reports) == []
    sizes = [r.num_examples for r in reports]
    test = load_test(src)
    assert test is not None
    # 569 tumours: a stratified 20 % (114) held out, the rest dealt to the sites.
    assert (sum(sizes), len(test)) == (455, 114)
    assert min(sizes) >= 20
    assert reports[0].input_shape == (30,)


def test_the_files_are_learnable_with_the_shared_scaling(tmp_path: Path) -> None:
    # What the walkthrough promises: the encoded sites' rows, pooled here only to
    # check the files, fit a linear model that does well on the held-out test.csv.
    from sklearn.linear_model import LogisticRegression

    make_sites(str(tmp_path), sites=5, seed=1)
    src = source_for(tmp_path)
    sites = [read_site(src, i) for i in range(5)]
    x = np.concatenate([s.x for s in sites])
    y = np.concatenate([s.y for s in sites])
    assert abs(x.mean()) < 0.05 and abs(x.std() - 1.0) < 0.05  # the scaling standardises
    test = load_test(src)
    assert test is not None
    assert LogisticRegression(max_iter=1000).fit(x, y).score(test.x, test.y) >= 0.93


def test_dirichlet_split_is_non_iid_and_seeded(tmp_path: Path) -> None:
    a = make_sites(str(tmp_path / "a"), seed=0, alpha=0.3)
    b = make_sites(str(tmp_path / "b"), seed=0, alpha=0.3)
    c = make_sites(str(tmp_path / "c"), seed=1, alpha=0.3)
    for pa, pb in zip(a.train_paths, b.train_paths, strict=True):
        assert Path(pa).read_bytes() == Path(pb).read_bytes()
    assert a.site_sizes != c.site_sizes
    src = source_for(tmp_path / "a")
    malignant_share = [float((read_site(src, i).y == 0).mean()) for i in range(5)]
    assert max(malignant_share) - min(malignant_share) > 0.3


def test_feature_split_gives_each_site_a_range_of_tumour_sizes(tmp_path: Path) -> None:
    out = make_sites(str(tmp_path), split="feature", sites=3)
    src = source_for(tmp_path)
    radius = [read_site(src, i).x[:, 0] for i in range(3)]  # mean_radius, scaled
    assert out.columns[1] == "mean_radius"
    assert radius[0].max() <= radius[1].min() and radius[1].max() <= radius[2].min()
    assert out.site_sizes == (152, 152, 151)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--split 'label' is unknown"):
        make_sites(str(tmp_path), split="label")
    with pytest.raises(ValueError, match="--sites must be >= 1"):
        make_sites(str(tmp_path), sites=0)
