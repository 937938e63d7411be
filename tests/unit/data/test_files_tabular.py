"""Per-site CSV and Parquet files: one encoding for every site, and errors that name the site."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rayfed.data.files import describe_site, load_site, load_test, read_site, schema_problems
from rayfed.data.schema import FileSource, site_mismatches
from rayfed.errors import DataError

HEADER = "age,smoker,ward,diagnosis\n"


def write_sites(tmp_path: Path, rows: dict[int, str], header: str = HEADER) -> str:
    for pid, body in rows.items():
        (tmp_path / f"site_{pid}").mkdir(exist_ok=True)
        (tmp_path / f"site_{pid}" / "train.csv").write_text(header + body)
    return str(tmp_path / "site_{participant_id}" / "train.csv")


def source(template: str, **kw: object) -> FileSource:
    base = FileSource(train_path=template, label_column="diagnosis",
                      classes=("benign", "malignant"), numeric=("age",),
                      categorical={"smoker": ("no", "yes"), "ward": ("a", "b", "c")},
                      scaling={"age": (50.0, 10.0)})
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


SITE0 = "60,yes,a,malignant\n40,no,c,benign\n50,no,b,benign\n"
SITE1 = "70,no,b,malignant\n"


def test_every_site_encodes_alike(tmp_path: Path) -> None:
    src = source(write_sites(tmp_path, {0: SITE0, 1: SITE1}))
    ds0, ds1 = read_site(src, 0), read_site(src, 1)
    # age scaled by the agreed (50, 10), then smoker one-hot (no, yes), ward one-hot (a, b, c).
    np.testing.assert_array_equal(ds0.x, np.array([[1.0, 0, 1, 1, 0, 0],
                                                   [-1.0, 1, 0, 0, 0, 1],
                                                   [0.0, 1, 0, 0, 1, 0]], np.float32))
    np.testing.assert_array_equal(ds0.y, [1, 0, 0])
    # Site 1 never saw "yes", "a" or "c", yet its layout is the same.
    np.testing.assert_array_equal(ds1.x, np.array([[2.0, 1, 0, 0, 1, 0]], np.float32))
    assert ds0.x.dtype == np.float32 and ds0.y.dtype == np.int64
    assert ds0.num_classes == ds1.num_classes == 2
    s0, s1 = describe_site(src, 0), describe_site(src, 1)
    assert s0.features == ("age", "smoker=no", "smoker=yes", "ward=a", "ward=b", "ward=c")
    assert s0.input_shape == s1.input_shape == (6,)
    assert (s0.num_examples, s1.num_examples) == (3, 1)
    assert site_mismatches([s0, s1]) == []


def test_parquet_reads_like_csv(tmp_path: Path) -> None:
    csv_src = source(write_sites(tmp_path, {0: SITE0}))
    frame = pd.read_csv(tmp_path / "site_0" / "train.csv")
    (tmp_path / "pq_0").mkdir()
    frame.to_parquet(tmp_path / "pq_0" / "train.parquet")
    pq_src = dataclasses.replace(csv_src, train_path=str(tmp_path / "pq_{participant_id}" /
                                                         "train.parquet"))
    a, b = read_site(csv_src, 0), read_site(pq_src, 0)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)


def test_unseen_label_names_site_file_column_and_value(tmp_path: Path) -> None:
    src = source(write_sites(tmp_path, {0: SITE0, 3: "55,no,a,unknown\n"}))
    assert schema_problems(src, 0) == []
    [problem] = schema_problems(src, 3)
    path = tmp_path / "site_3" / "train.csv"
    assert problem.startswith(f"site 3 ({path}): column 'diagnosis' has label(s) ['unknown']")
    assert "dataset.classes=['benign', 'malignant']" in problem
    with pytest.raises(DataError, match=r"site 3 .* label\(s\) \['unknown'\]"):
        read_site(src, 3)


def test_integer_labels_with_num_classes(tmp_path: Path) -> None:
    template = write_sites(tmp_path, {0: "1.5,0\n2.5,1\n", 1: "3.0,2\n"}, header="f,label\n")
    src = FileSource(train_path=template, num_classes=2)
    np.testing.assert_array_equal(read_site(src, 0).y, [0, 1])
    [problem] = schema_problems(src, 1)
    assert "column 'label' has label(s) ['2'] outside 0..1 (dataset.num_classes=2)" in problem


def test_unseen_category_names_site_column_and_value(tmp_path: Path) -> None:
    src = source(write_sites(tmp_path, {2: "50,no,d,benign\n50,maybe,a,benign\n"}))
    problems = schema_problems(src, 2)
    assert len(problems) == 2
    assert "site 2" in problems[0] and "column 'smoker' has value(s) ['maybe']" in problems[0]
    assert "dataset.categorical.smoker=['no', 'yes']" in problems[0]
    assert "column 'ward' has value(s) ['d']" in problems[1]


def test_different_columns_name_the_site_and_the_column(tmp_path: Path) -> None:
    template = write_sites(tmp_path, {0: SITE0})
    (tmp_path / "site_1").mkdir()
    (tmp_path / "site_1" / "train.csv").write_text("age,smoker,diagnosis,bmi\n"
                                                   "50,no,benign,22\n")
    [missing, extra] = schema_problems(source(template), 1)
    assert missing.startswith("site 1 (") and "lacks column(s) ['ward']" in missing
    assert "has column(s) ['bmi'] that the dataset config does not name" in extra
    assert "dataset.drop" in extra
    # Listing it in dataset.drop (and dropping ward from the declaration) fixes it.
    fixed = source(template, drop=("bmi",), categorical={"smoker": ("no", "yes")})
    assert schema_problems(fixed, 1) == []


def test_undeclared_numeric_columns_are_compared_across_sites(tmp_path: Path) -> None:
    template = write_sites(tmp_path, {0: "1,2,0\n", 1: "1,0\n"}, header="a,b,label\n")
    (tmp_path / "site_1" / "train.csv").write_text("a,c,label\n1,2,0\n")
    (tmp_path / "site_2").mkdir()
    (tmp_path / "site_2" / "train.csv").write_text("b,a,label\n1,2,0\n")
    src = FileSource(train_path=template, num_classes=1)
    reports = [describe_site(src, i) for i in range(3)]
    assert all(r.problems == () for r in reports)
    [diff, order] = site_mismatches(reports)
    assert diff.startswith("site 1 (") and "columns only here: ['c']" in diff
    assert "columns missing here: ['b']" in diff and "differ from site 0" in diff
    assert order.startswith("site 2 (") and "the same columns in another order" in order


def test_non_numeric_and_missing_values_are_counted(tmp_path: Path) -> None:
    src = source(write_sites(tmp_path, {0: "sixty,no,a,benign\n,no,a,benign\n50,no,a,benign\n"}))
    [problem] = schema_problems(src, 0)
    assert "column 'age' has 2 missing or non-numeric value(s) (first: 'sixty'" in problem


def test_missing_file_names_the_site_and_the_path(tmp_path: Path) -> None:
    src = source(write_sites(tmp_path, {0: SITE0}))
    [problem] = schema_problems(src, 4)
    path = tmp_path / "site_4" / "train.csv"
    assert problem.startswith(f"site 4 ({path}): dataset.train_path=")
    assert f"gives '{path}', which does not exist on node" in problem
    with pytest.raises(DataError, match="site 4"):
        load_site(src, 4, val_fraction=0.1, seed=0)


def test_load_site_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    rows = "".join(f"{40 + i},no,a,{'benign' if i % 3 else 'malignant'}\n" for i in range(20))
    src = source(write_sites(tmp_path, {1: rows}))
    a = load_site(src, 1, val_fraction=0.25, seed=7)
    b = load_site(src, 1, val_fraction=0.25, seed=7)
    c = load_site(src, 1, val_fraction=0.25, seed=8)
    assert a.participant_id == 1
    assert (len(a.y_train), len(a.y_val)) == (15, 5)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    torch.testing.assert_close(a.x_val, b.x_val, rtol=0, atol=0)
    assert not torch.equal(a.x_val, c.x_val)
    # Every row lands in exactly one part (ages are unique).
    ages = sorted(torch.cat([a.x_train[:, 0], a.x_val[:, 0]]).tolist())
    assert ages == pytest.approx([(40 + i - 50) / 10 for i in range(20)])


def test_test_file_is_optional_and_encoded_alike(tmp_path: Path) -> None:
    template = write_sites(tmp_path, {0: SITE0})
    assert load_test(source(template)) is None
    (tmp_path / "test.csv").write_text(HEADER + SITE1)
    test = load_test(source(template, test_path=str(tmp_path / "test.csv")))
    assert test is not None
    np.testing.assert_array_equal(test.x, np.array([[2.0, 1, 0, 0, 1, 0]], np.float32))
    (tmp_path / "bad.csv").write_text(HEADER + "70,no,z,malignant\n")
    with pytest.raises(DataError, match=r"the test set \(.*bad.csv\): column 'ward'"):
        load_test(source(template, test_path=str(tmp_path / "bad.csv")))


def test_text_levels_like_NA_are_values_not_gaps(tmp_path: Path) -> None:
    src = FileSource(train_path=write_sites(tmp_path, {0: "1,NA,0\n2,None,1\n"},
                                            header="f,blood,label\n"),
                     num_classes=2, categorical={"blood": ("NA", "None")})
    np.testing.assert_array_equal(read_site(src, 0).x, [[1, 1, 0], [2, 0, 1]])


def test_a_site_opens_only_its_own_file(tmp_path: Path) -> None:
    # sys.addaudithook cannot be removed, so the hook records only while `seen` is armed.
    import sys

    seen: list[str] = []
    armed = [False]

    def hook(event: str, args: tuple[object, ...]) -> None:
        if armed[0] and event == "open" and isinstance(args[0], str):
            seen.append(args[0])

    sys.addaudithook(hook)
    src = source(write_sites(tmp_path, {0: SITE0, 1: SITE1, 2: SITE1}))
    armed[0] = True
    try:
        describe_site(src, 1)
        load_site(src, 1, val_fraction=0.0, seed=0)
    finally:
        armed[0] = False
    sites = {Path(p).parent.name for p in seen if str(tmp_path) in p}
    assert sites == {"site_1"}
