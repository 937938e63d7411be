"""Write per-hospital CSV files from scikit-learn's breast cancer data set.

    python -m rayfed.data.make_sites OUT_DIR [--sites 5] [--seed 0]
        [--split dirichlet|feature] [--alpha 1.0] [--test-fraction 0.2]

Writes ``OUT_DIR/site_<i>/train.csv`` for ``i = 0 .. sites-1`` (rayfed's
participant ids), the held-out ``OUT_DIR/test.csv`` for the server, and
``OUT_DIR/schema.yaml`` with the declared encoding every site must share: the
label column, the classes, the numeric columns and their scaling constants.

The data (Wolberg et al., Wisconsin Diagnostic Breast Cancer, 1995; 569 tumours,
30 features) is split non-IID, as real hospitals' patients are:

* ``dirichlet``: label skew, class proportions per site from ``Dir(alpha)``
  (Hsu et al. 2019, the NIID-Bench variant in ``rayfed.data.partition``);
* ``feature``: sites take consecutive ranges of ``mean_radius``, as if each
  hospital saw tumours of a different size (covariate and label skew at once).

The files hold raw clinical values, as a hospital's export would. The scaling
constants are the mean and standard deviation over all sites' training rows:
here they stand for what a consortium agrees on before training (published
reference ranges, or statistics computed under secure aggregation).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rayfed.data.partition import dirichlet

LABEL = "diagnosis"
SPLITS = ("dirichlet", "feature")


@dataclass(frozen=True)
class SitesWritten:
    """Where the files went and how many rows each holds."""

    out_dir: str
    train_paths: tuple[str, ...]
    test_path: str
    schema_path: str
    site_sizes: tuple[int, ...]
    classes: tuple[str, ...]
    columns: tuple[str, ...]


def _split(x: np.ndarray, y: np.ndarray, columns: list[str], *, sites: int, split: str,
           alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    if split == "dirichlet":
        # 20 rows at least: every site keeps a validation split and a few batches.
        return dirichlet(y, sites, alpha=alpha, rng=rng, min_samples=20)
    order = np.argsort(x[:, columns.index("mean_radius")], kind="stable")
    return [np.sort(part) for part in np.array_split(order, sites)]


def _write_csv(path: str, x: np.ndarray, y: np.ndarray, columns: list[str],
               classes: tuple[str, ...]) -> None:
    import pandas as pd

    frame = pd.DataFrame(x, columns=columns)
    frame.insert(0, LABEL, [classes[i] for i in y])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    frame.to_csv(path, index=False)


def _write_schema(path: str, columns: list[str], classes: tuple[str, ...],
                  mean: np.ndarray, std: np.ndarray) -> None:
    import yaml  # PyYAML comes with Hydra (omegaconf)

    schema = {
        "label_column": LABEL,
        "classes": list(classes),
        "numeric": columns,
        "scaling": {c: [round(float(m), 6), round(float(s), 6)]
                    for c, m, s in zip(columns, mean, std, strict=True)},
    }
    with open(path, "w") as f:
        f.write("# The encoding every site shares (rayfed.data.make_sites).\n")
        yaml.safe_dump(schema, f, sort_keys=False)


def make_sites(out_dir: str, *, sites: int = 5, seed: int = 0, split: str = "dirichlet",
               alpha: float = 1.0, test_fraction: float = 0.2) -> SitesWritten:
    """Write the files described in the module docstring; deterministic in ``seed``."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    if split not in SPLITS:
        raise ValueError(f"--split {split!r} is unknown; choose one of {list(SPLITS)}")
    if sites < 1:
        raise ValueError(f"--sites must be >= 1 (got {sites})")
    bunch = load_breast_cancer()
    columns = [str(n).replace(" ", "_") for n in bunch.feature_names]
    classes = tuple(str(n) for n in bunch.target_names)  # malignant = 0, benign = 1
    x_pool, x_test, y_pool, y_test = train_test_split(
        bunch.data, bunch.target, test_size=test_fraction, stratify=bunch.target,
        random_state=seed)
    parts = _split(x_pool, y_pool, columns, sites=sites, split=split, alpha=alpha,
                   rng=np.random.default_rng([seed, 0x517E]))
    train_paths = []
    for i, idx in enumerate(parts):
        path = os.path.join(out_dir, f"site_{i}", "train.csv")
        _write_csv(path, x_pool[idx], y_pool[idx], columns, classes)
        train_paths.append(path)
    test_path = os.path.join(out_dir, "test.csv")
    _write_csv(test_path, x_test, y_test, columns, classes)
    std = x_pool.std(axis=0)
    schema_path = os.path.join(out_dir, "schema.yaml")
    _write_schema(schema_path, columns, classes, x_pool.mean(axis=0), np.where(std > 0, std, 1))
    return SitesWritten(out_dir=out_dir, train_paths=tuple(train_paths), test_path=test_path,
                        schema_path=schema_path, site_sizes=tuple(len(p) for p in parts),
                        classes=classes, columns=(LABEL, *columns))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rayfed.data.make_sites",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=SPLITS, default="dirichlet")
    parser.add_argument("--alpha", type=float, default=1.0,
                        help="Dirichlet concentration for --split dirichlet (smaller: more skew)")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    out = make_sites(os.path.abspath(args.out_dir), sites=args.sites, seed=args.seed,
                     split=args.split, alpha=args.alpha, test_fraction=args.test_fraction)
    for path, n in zip(out.train_paths, out.site_sizes, strict=True):
        print(f"{path}: {n} rows")
    print(f"{out.test_path}: held-out test set\n{out.schema_path}: the shared encoding")
    print("train path template: " + os.path.join(out.out_dir, "site_{participant_id}",
                                                 "train.csv"))


if __name__ == "__main__":
    main()
