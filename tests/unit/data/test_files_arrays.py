"""Per-site NPZ files and image folders, and the declaration checks that open no file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rayfed.data.files import describe_site, read_site, schema_problems
from rayfed.data.schema import FileSource, site_mismatches, site_path, source_problems
from rayfed.errors import DataError


def save_image(path: Path, value: int, size: tuple[int, int] = (4, 3)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color=(value, 0, 255)).save(path)


def test_npz_site(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float64).reshape(3, 2, 2)
    np.savez(tmp_path / "s0.npz", x=x, y=np.array([2, 0, 1]))
    src = FileSource(train_path=str(tmp_path / "s{participant_id}.npz"),
                     classes=("a", "b", "c"))
    ds = read_site(src, 0)
    np.testing.assert_array_equal(ds.x, x.astype(np.float32))
    assert ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.y, [2, 0, 1])
    assert describe_site(src, 0).input_shape == (2, 2)


def test_npz_problems(tmp_path: Path) -> None:
    np.savez(tmp_path / "s0.npz", features=np.zeros((2, 3)), y=np.zeros(2, np.int64))
    np.savez(tmp_path / "s1.npz", x=np.zeros((2, 3)), y=np.array([0, 5]))
    np.savez(tmp_path / "s2.npz", x=np.zeros((2, 3)), y=np.zeros(3, np.int64))
    src = FileSource(train_path=str(tmp_path / "s{participant_id}.npz"), num_classes=2)
    assert "lacks array(s) ['x'] (it has ['features', 'y'])" in schema_problems(src, 0)[0]
    assert "label(s) ['5'] outside 0..1" in schema_problems(src, 1)[0]
    assert "one label per row of x (got x (2, 3), y (3,))" in schema_problems(src, 2)[0]


def test_npz_with_object_arrays_is_refused_not_unpickled(tmp_path: Path) -> None:
    np.savez(tmp_path / "s0.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1, int))
    src = FileSource(train_path=str(tmp_path / "s{participant_id}.npz"), num_classes=1)
    [problem] = schema_problems(src, 0)
    assert problem.startswith("site 0 (") and "cannot read it as npz" in problem
    assert "allow_pickle=False" in problem
    (tmp_path / "s1.npz").write_bytes(b"not a zip")
    assert "cannot read it as npz" in schema_problems(src, 1)[0]


def test_image_folder_with_declared_classes(tmp_path: Path) -> None:
    save_image(tmp_path / "site_0" / "dog" / "1.png", 51)
    save_image(tmp_path / "site_0" / "cat" / "2.png", 102)
    (tmp_path / "site_0" / "cat" / "notes.txt").write_text("not an image")
    src = FileSource(train_path=str(tmp_path / "site_{participant_id}"),
                     classes=("bird", "cat", "dog"))
    ds = read_site(src, 0)
    assert ds.x.shape == (2, 3, 3, 4) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.y, [1, 2])  # sorted folders: cat, dog
    np.testing.assert_allclose(ds.x[1, :, 0, 0], [0.2, 0.0, 1.0])  # 51/255 = 0.2
    assert ds.num_classes == 3


def test_image_folder_resizes_and_greyscales(tmp_path: Path) -> None:
    save_image(tmp_path / "site_0" / "a" / "1.png", 10, size=(8, 8))
    save_image(tmp_path / "site_0" / "b" / "2.png", 10, size=(5, 7))
    src = FileSource(train_path=str(tmp_path / "site_{participant_id}"), classes=("a", "b"),
                     image_size=(4, 6), image_mode="L")
    assert read_site(src, 0).x.shape == (2, 1, 4, 6)
    [problem] = schema_problems(FileSource(train_path=src.train_path, classes=("a", "b")), 0)
    assert "b/2.png has shape (3, 7, 5), the first image (3, 8, 8)" in problem
    assert "dataset.image_size" in problem


def test_unknown_class_folder_names_site_and_folder(tmp_path: Path) -> None:
    save_image(tmp_path / "site_1" / "cat" / "1.png", 0)
    save_image(tmp_path / "site_1" / "cta" / "2.png", 0)
    src = FileSource(train_path=str(tmp_path / "site_{participant_id}"), classes=("cat", "dog"))
    [problem] = schema_problems(src, 1)
    assert problem.startswith("site 1 (") and "class folder(s) ['cta']" in problem


def test_undeclared_classes_that_differ_between_sites_are_caught(tmp_path: Path) -> None:
    for pid, classes in ((0, ("cat", "dog")), (1, ("dog",))):
        for c in classes:
            save_image(tmp_path / f"site_{pid}" / c / "1.png", 0)
    src = FileSource(train_path=str(tmp_path / "site_{participant_id}"), num_classes=2)
    # Site 1 alone sees one folder where two classes are declared.
    assert "has 1 class folders ['dog'] but dataset.num_classes=2" in schema_problems(src, 1)[0]
    reports = [describe_site(src, i) for i in (0, 1)]
    [problem] = site_mismatches(reports)
    assert "site 1" in problem and "classes ['dog']" in problem and "['cat', 'dog']" in problem


def test_empty_image_folder(tmp_path: Path) -> None:
    (tmp_path / "site_0" / "cat").mkdir(parents=True)
    src = FileSource(train_path=str(tmp_path / "site_{participant_id}"), classes=("cat",))
    assert "holds no images" in schema_problems(src, 0)[0]
    with pytest.raises(DataError, match="site 0"):
        read_site(src, 0)


def test_site_path_fills_only_the_participant_id() -> None:
    assert site_path("/data/site_{participant_id}/train.csv", 3) == "/data/site_3/train.csv"
    with pytest.raises(ValueError, match=r"placeholder\(s\) \['site'\]"):
        site_path("/data/{site}/train.csv", 3)


@pytest.mark.parametrize(("change", "message"), [
    ({"train_path": "/data/train.csv"}, "must contain {participant_id}"),
    ({"train_path": "/d/{participant_id}/{x}.csv"}, "must contain {participant_id}"),
    ({"test_path": "/d/{participant_id}.csv"}, "takes no placeholder"),
    ({"num_classes": None, "classes": ()}, "set dataset.classes"),
    ({"num_classes": 3}, "dataset.classes has 2 entries but dataset.num_classes=3"),
    ({"classes": ("a", "a")}, "dataset.classes has duplicates"),
    ({"numeric": ("y",)}, "column 'y' is named by both dataset.label_column and dataset.numeric"),
    ({"categorical": {"c": ()}}, "dataset.categorical.c must list its levels"),
    ({"scaling": {"f": (0.0, 0.0)}}, "dataset.scaling.f must be [center, scale] with scale > 0"),
    ({"scaling": {"g": (0.0, 1.0)}}, "dataset.scaling.g: 'g' is not a numeric feature column"),
    ({"format": "xlsx"}, "dataset.format='xlsx' is unknown"),
    ({"image_size": (0, 4)}, "dataset.image_size must be [height, width]"),
])
def test_declaration_problems_name_the_key(change: dict[str, object], message: str) -> None:
    good = dict(train_path="/d/{participant_id}.csv", label_column="y", classes=("a", "b"),
                num_classes=2, numeric=("f",))
    assert source_problems(FileSource(**good)) == []  # type: ignore[arg-type]
    problems = source_problems(FileSource(**{**good, **change}))  # type: ignore[arg-type]
    assert any(message in p for p in problems), problems


def test_a_bad_declaration_is_reported_before_any_file_is_read(tmp_path: Path) -> None:
    src = FileSource(train_path=str(tmp_path / "no_such_dir" / "{participant_id}.csv"))
    [problem] = schema_problems(src, 0)
    assert problem.startswith("set dataset.classes")
