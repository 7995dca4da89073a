"""Two-cluster models fitted on the sample, and their decision functions as plain array math.

Both models' predictions reduce to one function of the input vector x (a flattened neighborhood
for linear features, or the compact DFT magnitudes):

    cluster(x) = 1  if  sum_i lam_i (v_i . x)^2 + u . x + c > 0  else 0

- k-means (2 centres): d0 - d1 = 2 (c1 - c0) . f + |c0|^2 - |c1|^2, so no quadratic term; with
  ``kmeans_cut="mixture"`` or ``"mirror"`` the boundary may move along the same axis (kmeans_cut.py).
- GMM (full covariance): log pi1 N1(f) - log pi0 N0(f) = f'Af + b.f + c; A is eigen-decomposed.
For linear features f = G x, G is folded in (A -> G'AG, b -> G'b), so features are never formed:
the whole feature-plus-predict step is one small matrix product per voxel. Ties go to cluster 0,
as scikit-learn's argmin/argmax do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..backend import to_host
from .features import ROWS
from .kmeans_cut import mirror_cut, mixture_cut

CLUSTERERS = ("kmeans", "gmm")
KMEANS_BACKENDS = ("sklearn", "dask-ml")
COARSE_STEP = 8            # the coarse fit sees every 8th row of the sample
COARSE_MIN_ROWS = 20_000   # fewer coarse rows than this: the fit goes straight to the whole sample
TAIL_START_SHARE = 0.03  # fit_gmm's second start: this share of the sample's outer rows (1-10 % reached the same fits)
PROBE_STEP = 4  # the second start is tried first on every 4th row of the fit's rows (_tail_start) ...
PROBE_MIN_ROWS = 10_000  # ... when that leaves at least this many


@dataclass
class Decision:
    """cluster = [ (x @ V)^2 @ lam + x @ u + c > 0 ]; V (p, r), lam (r,), u (p,), c scalar."""

    V: np.ndarray
    lam: np.ndarray
    u: np.ndarray
    c: float
    space: str  # "neighborhood" or "fft"

    @property
    def matrix(self) -> np.ndarray:
        """[V | u], (p, r + 1): one product gives every term."""
        return np.concatenate([self.V, self.u[:, None]], axis=1)


@dataclass
class FittedModel:
    """A fitted two-cluster model with its parameters (for metadata) and its decision function."""

    method: str
    params: dict
    decision: Decision
    sample_counts: list[int] = field(default_factory=list)  # k-means: its hard counts on the sample (free); gmm: []
    fit_seconds: float = 0.0
    labels: np.ndarray | None = field(default=None, repr=False)  # k-means (sklearn): its sample labels, not kept in metadata


def coarse_rows(n: int) -> slice | None:
    """Rows of the coarse fit (every COARSE_STEP-th), or None when the sample is too small for one.

    Why: the EM and Lloyd iterations a fit needs are the same at any sample size, but each costs
    time in proportion to the rows. Iterating to convergence on 1/8 of the sample and then
    continuing from there on the whole sample reaches the whole sample's fixed point (same stop
    rule) in a few full passes instead of 6-17. The sample's voxels are drawn at random, so
    every 8th row is a random subsample. Used for the Gaussian mixture (fit_gmm), where the
    passes cost most; k-means stays exact (fit_kmeans says why).
    """
    return slice(None, None, COARSE_STEP) if n // COARSE_STEP >= COARSE_MIN_ROWS else None


def fit_kmeans(features: np.ndarray, seed: int = 42, backend: str = "sklearn") -> tuple[np.ndarray, np.ndarray | None]:
    """Centres (2, d) and sample labels (n,) (None for dask-ml) of k-means with 2 clusters fitted
    on ``features`` (n, d) float64.

    ``sklearn`` (default): KMeans(n_clusters=2, random_state=seed) on the in-memory sample, the
    reference's exact model. ``dask-ml``: its scalable k-means|| with ``init_max_iter=3`` (its
    default init makes ~19 passes over the data), for samples too large for one machine.
    No coarse-to-fine schedule here: on a sparse sample 2-means splits a nearly unimodal noise
    cloud where its objective is flat, and a start from the coarse fit's centres settled on another
    split (96.5 % equal labels on the sparse dev tomogram, benchmarks/fit_schedule.py); Lloyd's
    iterations cost a few seconds at 1M rows anyway.
    """
    if backend == "sklearn":
        from .kmeans_sklearn import StreamedTolKMeans

        # copy_x=False: centre the sample in place (and restore it) instead of copying it; the
        # tolerance's variances without a copy either (kmeans_sklearn: the same model as KMeans)
        km = StreamedTolKMeans(n_clusters=2, random_state=seed, copy_x=False).fit(features)
        return km.cluster_centers_, km.labels_
    if backend == "dask-ml":
        import dask.array as da
        from dask_ml.cluster import KMeans as DKMeans

        x = da.from_array(features, chunks=(max(10_000, len(features) // 8), features.shape[1]))
        return np.asarray(DKMeans(n_clusters=2, random_state=seed, init_max_iter=3).fit(x).cluster_centers_), None
    raise ValueError(f"unknown k-means backend {backend!r}; use one of {KMEANS_BACKENDS}")


def fit_gmm(features: np.ndarray, seed: int = 42, device: str = "cpu", init_labels: np.ndarray | None = None,
            schedule: str = "exact", threads: int = 1, starts: str = "kmeans") -> dict:
    """GaussianMixture(n_components=2, covariance_type='full', random_state=seed) parameters.

    Fitted by gmm_em.fit_gaussian_mixture: scikit-learn's algorithm and numbers, streamed over
    row slices so the fit needs the sample plus a few MiB instead of ~3x the sample. ``device``
    'gpu': the EM iterations run on the GPU with cupy (the same code with xp = cupy, larger
    slices); the k-means initialisation stays scikit-learn's on the host. ``init_labels``: the
    sample labels of fit_kmeans(features, seed) when it has run (it is the mixture's initialisation).
    ``schedule`` 'coarse-to-fine': the mixture is fitted on the coarse rows first (coarse_rows;
    there from its own k-means initialisation, or from ``init_labels`` on those rows) and that fit starts the EM on the whole sample;
    the result then carries ``coarse`` (rows, iterations). ``threads``: the EM's passes split over
    that many threads (fit_threads.RowRanges). ``starts`` 'kmeans+tail': the EM also starts from
    ``tail_labels`` and the fit with the higher likelihood (by more than the EM's tolerance) is kept
    (``_tail_start``; with 'coarse-to-fine' on the coarse rows, and only the winner continues on the whole
    sample); the result then carries ``starts`` (the starts' lower bounds and which was kept). 'kmeans': k-means' labels only (the reference).
    """
    from .gmm_em import GMM_ROWS, GPU_ROWS, fit_gaussian_mixture

    xp, rows = np, GMM_ROWS
    if device == "gpu":
        import cupy as xp

        features, rows = xp.asarray(features), GPU_ROWS
    coarse = coarse_rows(len(features)) if schedule == "coarse-to-fine" else None
    part = features if coarse is None else features[coarse]
    init = init_labels if init_labels is None or coarse is None else np.asarray(init_labels)[coarse]
    first = fit_gaussian_mixture(part, 2, seed, rows=rows, xp=xp, init_labels=init, threads=threads)
    start, report = first, None
    if starts == "kmeans+tail":
        start, report = _tail_start(part, first, init, seed, rows, xp, threads)
    if coarse is None:
        params = start
    else:
        params = fit_gaussian_mixture(features, 2, seed, rows=rows, xp=xp, init_params=start, threads=threads)
        params["coarse"] = {"rows": len(part), "n_iter": start["n_iter"], "converged": start["converged"]}
    if report is not None:
        params["starts"] = report
    return params


def _tail_start(x, first: dict, init_labels, seed: int, rows: int, xp, threads: int) -> tuple[dict, dict]:
    """(the mixture kept, a report): ``first`` (fitted on ``x`` from k-means' labels ``init_labels``; None: its
    own k-means), or the fit from ``tail_labels`` when that is more likely by more than the EM's stopping
    tolerance (GMM_TOL per row: closer fits are the same optimum).

    The tail start is tried first on every PROBE_STEP-th row, against the k-means start on the same rows
    (both fitted there: a fair comparison), and continues on ``x`` only when it wins there; a sample too
    small for a probe (< PROBE_MIN_ROWS rows) compares on ``x`` directly. Why: the probe is a random subsample
    (the sample's rows are drawn at random) and its verdict agreed in sign with the whole comparison on the
    dev set and the held-out scenes, at about half the cost (the second start on all of ``x`` cost 2.6 s of an
    all-twelve fit, benchmarks/HISTORY.md)."""
    from .gmm_em import GMM_TOL, fit_gaussian_mixture

    def em(rows_x, **start):
        return fit_gaussian_mixture(rows_x, 2, seed, rows=rows, xp=xp, threads=threads, **start)

    report = {"kmeans_lower_bound": round(first["lower_bound"], 6), "tail_share": TAIL_START_SHARE}
    if len(x) // PROBE_STEP >= PROBE_MIN_ROWS:
        probe = slice(None, None, PROBE_STEP)
        a = em(x[probe], init_labels=None if init_labels is None else np.asarray(init_labels)[probe])
        b = em(x[probe], init_labels=tail_labels(x[probe], xp))
        report.update(probe_rows=len(x[probe]), probe_kmeans_lower_bound=round(a["lower_bound"], 6),
                      probe_tail_lower_bound=round(b["lower_bound"], 6))
        if b["lower_bound"] <= a["lower_bound"] + GMM_TOL:
            return first, {**report, "kept": "kmeans"}
        tail = em(x, init_params=b)
    else:
        tail = em(x, init_labels=tail_labels(x, xp))
    won = tail["lower_bound"] > first["lower_bound"] + GMM_TOL
    return (tail if won else first), {**report, "tail_lower_bound": round(tail["lower_bound"], 6),
                                      "kept": "tail" if won else "kmeans"}


def tail_labels(features, xp=np) -> np.ndarray:
    """(n,) uint8 host labels: 1 for the TAIL_START_SHARE of rows farthest from the sample's mean (squared
    Mahalanobis distance under the sample's covariance), 0 for the rest: a mixture's second start.

    Why: EM climbs to the optimum nearest its start, and k-means' labels (the reference's start) split the
    noise cloud itself where particles are faint and rare; on the sparse dose-10 held-out scenes that split
    (30-35 % of the sample, 1.6 % of it particle cores) had a lower likelihood than the fit reached from the
    outer rows (0.6-1.4 %, 15-30 % particle cores), where the particles sit (README, "Mixture starts")."""
    from .gmm_em import REG_COVAR

    x = xp.asarray(features, dtype=xp.float64)
    c = x - x.mean(axis=0)
    cov = (c.T @ c) / max(len(c) - 1, 1) + REG_COVAR * xp.eye(c.shape[1])  # the mixture's own regulariser
    d2 = to_host(xp.einsum("ij,ij->i", c @ xp.linalg.inv(cov), c))
    return (d2 > np.quantile(d2, 1.0 - TAIL_START_SHARE)).astype(np.uint8)


def kmeans_decision(centres: np.ndarray, G: np.ndarray | None, space: str, offset: float = 0.0) -> Decision:
    """Linear decision of 2-means; ``G`` maps inputs to features (None: identity); ``offset``:
    subtracted from the decision value (the boundary moved along the same axis, ``mixture_cut``)."""
    c0, c1 = centres
    w = 2 * (c1 - c0)
    c = float(c0 @ c0 - c1 @ c1) - float(offset)
    u = w if G is None else G.T @ w
    return Decision(np.zeros((len(u), 0)), np.zeros(0), u, c, space)


def gmm_decision(params: dict, G: np.ndarray | None, space: str, rtol: float = 1e-12) -> Decision:
    """Quadratic decision of a 2-component full-covariance GMM; ``G`` maps inputs to features."""
    w, mu, pc = params["weights"], params["means"], params["precisions_cholesky"]
    prec = [p @ p.T for p in pc]
    logdet = [np.sum(np.log(np.diag(p))) for p in pc]
    A = 0.5 * (prec[0] - prec[1])
    b = prec[1] @ mu[1] - prec[0] @ mu[0]
    c = (np.log(w[1]) - np.log(w[0]) + logdet[1] - logdet[0]
         - 0.5 * mu[1] @ prec[1] @ mu[1] + 0.5 * mu[0] @ prec[0] @ mu[0])
    if G is not None:
        A = G.T @ A @ G
        b = G.T @ b
    lam, V = np.linalg.eigh(0.5 * (A + A.T))
    keep = np.abs(lam) > rtol * np.abs(lam).max()
    return Decision(V[:, keep], lam[keep], b, float(c), space)


def fit(method: str, features: np.ndarray, G: np.ndarray | None, space: str, seed: int = 42,
        kmeans_backend: str = "sklearn", device: str = "cpu", init_labels: np.ndarray | None = None,
        kmeans_cut: str = "midpoint", schedule: str = "exact", threads: int = 1, gmm_starts: str = "kmeans") -> FittedModel:
    """Fit ``method`` on the sample's features and return the model with its decision function
    (``device`` 'gpu': the Gaussian mixture's EM on the GPU; ``init_labels``: see fit_gmm;
    ``kmeans_cut`` 'mixture': see mixture_cut, 'mirror': see mirror_cut, 'midpoint': the k-means boundary, the reference;
    ``schedule`` 'coarse-to-fine': the mixture's, see fit_gmm; 'exact': scikit-learn's fit on the whole sample;
    ``gmm_starts``: the mixture's starts, see fit_gmm;
    ``threads``: the mixture's EM passes split over that many threads)."""
    import time

    t0 = time.perf_counter()
    if method == "kmeans":
        centres, labels = fit_kmeans(features, seed, kmeans_backend)
        params = {"cluster_centers": centres, "backend": kmeans_backend, "offset": 0.0}
        d = kmeans_decision(centres, None, space)
        # the decision's linear term on the sample, formed as predict forms it: the mixture cut's
        # projections and (with the final constant) the sample counts come from one product
        lin = np.concatenate([np.asarray(features[i:i + ROWS], np.float64) @ d.matrix
                              for i in range(0, len(features), ROWS)])[:, 0]
        if kmeans_cut in ("mixture", "mirror"):
            key = f"{kmeans_cut}_cut"
            t, params[key] = mixture_cut(lin + d.c, seed, threads) if kmeans_cut == "mixture" else mirror_cut(lin + d.c)
            params["offset"] = t if params[key]["small_cluster"] == 1 else -t
        model = FittedModel("kmeans", params, kmeans_decision(centres, G, space, params["offset"]), labels=labels)
        # kmeans_decision's constant with the offset: d.c - offset, the same float
        model.sample_counts = np.bincount((lin + (d.c - params["offset"]) > 0).astype(np.uint8), minlength=2).tolist()
    elif method == "gmm":
        params = {**fit_gmm(features, seed, device, init_labels, schedule, threads, gmm_starts), "schedule": schedule}
        model = FittedModel("gmm", params, gmm_decision(params, G, space))
    else:
        raise ValueError(f"unknown clusterer {method!r}; use one of {CLUSTERERS}")
    model.fit_seconds = time.perf_counter() - t0
    # a mixture's sample counts would take one more pass over the sample (1.1 s of an all-twelve fit at 500k rows,
    # benchmarks/stages.py) for metadata only: its weights are its share of the sample, and the labels' metadata
    # has the cluster counts over the whole tomogram
    return model


def sample_labels(model: FittedModel, features: np.ndarray, space: str) -> np.ndarray:
    """Cluster ids (n,) uint8 of the fit sample's ``features`` under ``model``'s decision (in feature space:
    the same rule its neighbourhood-space decision applies to voxels)."""
    if model.method == "kmeans":
        d = kmeans_decision(model.params["cluster_centers"], None, space, model.params.get("offset", 0.0))
    else:
        d = gmm_decision(model.params, None, space)
    return np.concatenate([predict(d, np.asarray(features[i:i + ROWS], np.float64)) for i in range(0, len(features), ROWS)])


def stacked_matrix(decisions: list[Decision]) -> np.ndarray:
    """The decisions' [V | u] matrices side by side: one product serves all of them."""
    return np.concatenate([d.matrix for d in decisions], axis=1)


def scores_to_labels(proj, decisions: list[Decision], xp=np) -> list:
    """Cluster ids (n,) uint8 per decision from ``proj = x @ stacked_matrix(decisions)``."""
    out, col = [], 0
    for d in decisions:
        r = d.V.shape[1]
        score = proj[:, col + r] + d.c
        if r:
            score = score + (proj[:, col:col + r] ** 2) @ xp.asarray(d.lam)
        out.append((score > 0).astype(xp.uint8))
        col += r + 1
    return out


def predict(decision: Decision, x, xp=np):
    """Cluster ids (n,) uint8 of inputs ``x`` (n, p) float64 under ``decision``."""
    return scores_to_labels(x @ xp.asarray(decision.matrix), [decision], xp)[0]
