"""Unsupervised classes of whitened descriptors: a Gaussian mixture, K by BIC or given.

Classes are numbered 1..K by decreasing size; each pick's confidence is the posterior
probability of its class under the mixture.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import PicketError

K_MAX = 10  # auto: at most this many classes, and at least MIN_PER_CLASS picks per class
MIN_PER_CLASS = 10


@dataclass
class Classes:
    labels: np.ndarray  # (n,) 1..K
    confidence: np.ndarray  # (n,) posterior of the assigned class
    k: int
    bic: dict = field(default_factory=dict)  # K -> BIC (auto only)


def parse_classes(value) -> int | None:
    """'auto' / None -> None; a positive integer (or its string) -> int; anything else: PicketError."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        k = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        k = int(value.strip())
    else:
        raise PicketError(f"--classes {value}", "is neither 'auto' nor a number", "give --classes auto or a number of classes K >= 1")
    if k < 1:
        raise PicketError(f"--classes {value}", "is not a number of classes", "give --classes auto or an integer K >= 1")
    return k


def check_k(k: int | None, n: int, source: object = "classes") -> None:
    if k is not None and k > n:
        raise PicketError(f"--classes {k}", f"asks for more classes than there are picks ({n}) in {source}",
                          f"give --classes auto or K <= {n}")


def _fit(x: np.ndarray, k: int, seed: int):
    from sklearn.mixture import GaussianMixture

    cov = "full" if len(x) >= 5 * k * x.shape[1] else "diag"
    return GaussianMixture(k, covariance_type=cov, reg_covar=1e-3, n_init=3, random_state=seed, max_iter=300).fit(x)


def cluster(x: np.ndarray, k: int | None = None, seed: int = 0) -> Classes:
    """Classes of the rows of ``x``: K given, or K in 1..K_MAX with the lowest BIC.

    BLAS runs single-threaded here: the matrices are tiny (picks x a few dimensions), and a
    multithreaded BLAS on busy cores made the fits ~10x slower (80 s instead of 7 s measured).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _cluster(np.asarray(x, float), k, seed)


def _cluster(x: np.ndarray, k: int | None, seed: int) -> Classes:
    n = len(x)
    check_k(k, n)
    bic = {}
    if k == 1 or n < 2:  # one class (one pick: no mixture to fit, and none is needed)
        return Classes(np.ones(n, int), np.ones(n), 1)
    if k is None:
        k_max = max(1, min(K_MAX, n // MIN_PER_CLASS))
        best = None
        for kk in range(1, k_max + 1):
            gm = _fit(x, kk, seed)
            bic[kk] = float(gm.bic(x))
            if best is None or bic[kk] < bic[best[0]]:
                best = (kk, gm)
        k, gm = best
    else:
        gm = _fit(x, k, seed)
    post = gm.predict_proba(x)
    raw = post.argmax(axis=1)
    # number by decreasing size; empty components (possible when K is given) come last
    order = np.argsort(-np.bincount(raw, minlength=k), kind="stable")
    rank = np.empty(k, int)
    rank[order] = np.arange(1, k + 1)
    return Classes(rank[raw], post[np.arange(n), raw], int(k), bic)
