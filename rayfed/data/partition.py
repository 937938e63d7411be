"""Split a data set's indices among federated participants.

Three schemes, from the papers that made them the standard benchmarks:

* ``iid``: a uniform random split into near-equal parts.
* ``dirichlet``: label skew. For every class, the class's samples are divided
  among participants in proportions drawn from ``Dir(alpha)`` (Hsu, Qi & Brown,
  "Measuring the Effects of Non-Identical Data Distribution for Federated
  Visual Classification", 2019). We use the NIID-Bench variant (Li et al.,
  "Federated Learning on Non-IID Data Silos: An Experimental Study", ICDE 2022),
  which gives no more of a class to a participant that already holds its equal
  share ``n / num_clients`` and redraws until everyone has ``min_samples``.
  Small ``alpha`` (0.1) means each participant sees few classes; large ``alpha``
  (100) approaches iid.
* ``shards``: the pathological split of McMahan et al., "Communication-Efficient
  Learning of Deep Networks from Decentralized Data" (AISTATS 2017): sort by
  label, cut into ``num_clients * shards_per_client`` shards, deal each
  participant ``shards_per_client`` of them at random.

Every partitioner is a pure function of its arguments and the generator passed
in, and returns one sorted int64 index array per participant; together the
arrays cover every index exactly once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rayfed.errors import DataError

Partitioner = Callable[..., list[np.ndarray]]
"""``(labels, num_clients, *, rng, alpha, shards_per_client, min_samples) -> parts``."""


def _raise_all(problems: list[str]) -> None:
    if problems:
        raise DataError("; ".join(problems))


def _client_problems(num_samples: int, num_clients: int) -> list[str]:
    if num_clients < 1:
        return [f"fl.num_clients must be >= 1 (got {num_clients}); use at least one participant"]
    if num_clients > num_samples:
        return [
            f"fl.num_clients={num_clients} is more participants than samples ({num_samples}); "
            "lower fl.num_clients or use a larger data set"
        ]
    return []


def _as_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(
            f"labels must be a 1-D array of class ids (got shape {labels.shape}); "
            "pass the data set's y, not x"
        )
    return labels


def _finish(parts: list[np.ndarray]) -> list[np.ndarray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def iid(num_samples: int, num_clients: int, *, rng: np.random.Generator) -> list[np.ndarray]:
    """Uniform random split of ``range(num_samples)``; part sizes differ by at most one."""
    _raise_all(_client_problems(num_samples, num_clients))
    return _finish(np.array_split(rng.permutation(num_samples), num_clients))


def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    *,
    alpha: float,
    rng: np.random.Generator,
    min_samples: int = 2,
    max_attempts: int = 100,
) -> list[np.ndarray]:
    """Label-skewed split with per-class proportions drawn from ``Dir(alpha)``.

    Hsu et al. 2019, in the NIID-Bench form (Li et al. 2022): a participant that
    already holds ``>= n / num_clients`` samples gets no more, and the whole draw
    is repeated until every participant holds at least ``min_samples``.

    Raises ``DataError`` for impossible parameters, or when ``max_attempts``
    draws all leave someone with fewer than ``min_samples``.
    """
    labels = _as_labels(labels)
    n = len(labels)
    problems = _client_problems(n, num_clients)
    if not alpha > 0:
        problems.append(
            f"partition.alpha must be > 0 (got {alpha}); "
            "use a positive Dirichlet concentration such as 0.5"
        )
    if min_samples < 0:
        problems.append(f"partition.min_samples must be >= 0 (got {min_samples}); use e.g. 2")
    elif num_clients >= 1 and num_clients * min_samples > n:
        problems.append(
            f"fl.num_clients={num_clients} participants with partition.min_samples={min_samples} "
            f"each need {num_clients * min_samples} samples but there are only {n}; "
            "lower fl.num_clients or partition.min_samples"
        )
    if max_attempts < 1:
        problems.append(f"max_attempts must be >= 1 (got {max_attempts})")
    _raise_all(problems)

    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(max_attempts):
        parts = _dirichlet_draw(by_class, n, num_clients, alpha, rng)
        if min(len(p) for p in parts) >= min_samples:
            return _finish(parts)
    raise DataError(
        f"could not give each of fl.num_clients={num_clients} participants at least "
        f"partition.min_samples={min_samples} samples with partition.alpha={alpha} "
        f"in {max_attempts} attempts; raise partition.alpha (less skew), "
        "lower fl.num_clients or lower partition.min_samples"
    )


def _dirichlet_draw(
    by_class: list[np.ndarray],
    num_samples: int,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """One NIID-Bench draw: deal each class out by Dirichlet proportions."""
    chunks: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    sizes = np.zeros(num_clients, dtype=np.int64)
    for members in by_class:
        members = rng.permutation(members)
        share = rng.dirichlet(np.full(num_clients, alpha))
        share = np.where(sizes < num_samples / num_clients, share, 0.0)
        if share.sum() > 0:
            share /= share.sum()
        else:
            # With tiny alpha the draw can underflow to exact zeros on every open
            # participant. Dir(alpha) tends to a one-hot vector at a uniformly random
            # coordinate as alpha -> 0, so hand the class to one open participant.
            open_clients = np.flatnonzero(sizes < num_samples / num_clients)
            share = np.zeros(num_clients)
            share[rng.choice(open_clients)] = 1.0
        cuts = (np.cumsum(share) * len(members)).astype(np.int64)[:-1]
        for client, piece in enumerate(np.split(members, cuts)):
            chunks[client].append(piece)
            sizes[client] += len(piece)
    return [np.concatenate(c) if c else np.empty(0, dtype=np.int64) for c in chunks]


def shards(
    labels: np.ndarray,
    num_clients: int,
    *,
    shards_per_client: int = 2,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """McMahan et al. 2017's pathological non-iid split.

    Sort indices by label (ties in random order), cut them into
    ``num_clients * shards_per_client`` contiguous shards whose sizes differ by at
    most one (so no sample is dropped), and deal each participant
    ``shards_per_client`` shards at random. A shard spans one label unless it
    straddles a class boundary, so a participant sees at most
    ``2 * shards_per_client`` labels, and at most ``shards_per_client`` when
    shards line up with classes.
    """
    labels = _as_labels(labels)
    n = len(labels)
    problems = _client_problems(n, num_clients)
    if shards_per_client < 1:
        problems.append(
            f"partition.shards_per_client must be >= 1 (got {shards_per_client}); "
            "McMahan et al. use 2"
        )
    elif num_clients >= 1 and num_clients * shards_per_client > n:
        problems.append(
            f"fl.num_clients * partition.shards_per_client = {num_clients * shards_per_client} "
            f"shards is more than the {n} samples; lower partition.shards_per_client "
            "or fl.num_clients"
        )
    _raise_all(problems)

    shuffled = rng.permutation(n)
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    pieces = np.array_split(by_label, num_clients * shards_per_client)
    dealt = rng.permutation(len(pieces)).reshape(num_clients, shards_per_client)
    return _finish([np.concatenate([pieces[s] for s in row]) for row in dealt])


def _iid_scheme(
    labels: np.ndarray, num_clients: int, *, rng: np.random.Generator, **_: object
) -> list[np.ndarray]:
    return iid(len(_as_labels(labels)), num_clients, rng=rng)


def _dirichlet_scheme(
    labels: np.ndarray,
    num_clients: int,
    *,
    rng: np.random.Generator,
    alpha: float,
    min_samples: int,
    **_: object,
) -> list[np.ndarray]:
    return dirichlet(labels, num_clients, alpha=alpha, rng=rng, min_samples=min_samples)


def _shards_scheme(
    labels: np.ndarray,
    num_clients: int,
    *,
    rng: np.random.Generator,
    shards_per_client: int,
    **_: object,
) -> list[np.ndarray]:
    return shards(labels, num_clients, shards_per_client=shards_per_client, rng=rng)


PARTITIONERS: dict[str, Partitioner] = {
    "iid": _iid_scheme,
    "dirichlet": _dirichlet_scheme,
    "shards": _shards_scheme,
}


def partition(
    labels: np.ndarray,
    num_clients: int,
    *,
    scheme: str,
    rng: np.random.Generator,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    min_samples: int = 2,
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` among ``num_clients`` with the named scheme.

    ``alpha`` and ``min_samples`` are used by ``dirichlet`` only,
    ``shards_per_client`` by ``shards`` only.
    """
    if scheme not in PARTITIONERS:
        raise DataError(
            f"partition.scheme {scheme!r} is unknown; choose one of {sorted(PARTITIONERS)}"
        )
    return PARTITIONERS[scheme](
        labels,
        num_clients,
        rng=rng,
        alpha=alpha,
        shards_per_client=shards_per_client,
        min_samples=min_samples,
    )


def train_val_split(
    indices: np.ndarray, *, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split one participant's indices into sorted ``(train, val)`` int64 arrays.

    The validation part has ``floor(val_fraction * len(indices))`` samples, so it
    is empty for tiny shards, and train is never empty when there is a sample.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(
            f"dataset.val_fraction must be in [0, 1) (got {val_fraction}); "
            "use e.g. 0.1, or 0 for no validation split"
        )
    indices = np.asarray(indices)
    if indices.ndim != 1:
        raise DataError(f"indices must be a 1-D index array (got shape {indices.shape})")
    # The cap guards against float rounding of val_fraction * n up to n.
    num_val = min(int(np.floor(val_fraction * len(indices))), max(len(indices) - 1, 0))
    shuffled = rng.permutation(indices)
    train, val = _finish([shuffled[num_val:], shuffled[:num_val]])
    return train, val
