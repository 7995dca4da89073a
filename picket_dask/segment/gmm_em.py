"""scikit-learn's GaussianMixture (full covariance, k-means init), run a slice of rows at a time.

Why by hand: scikit-learn's EM allocates several (n, d) float64 temporaries per component and
step (X - mu, resp * (X - mu).T, X @ P), so a 1M x 64 sample peaks at ~3x its own size; dask-ml
has no mixture model. This is the same algorithm with the same numbers, streamed over row slices:
the k-means initialisation (KMeans(n_init=1) with the mixture's RandomState), E-step, M-step with
reg_covar on the diagonal, Cholesky precisions, and the stop rule |change of the mean
log-likelihood| < tol. Only the responsibilities (n, k) are kept whole. Results agree with
scikit-learn to rounding (tests/test_segment.py compares parameters and iteration counts).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg
from scipy.special import logsumexp

from .features import ROWS  # rows per slice: (ROWS, d) float64 temporaries, 32 MiB at d = 64


def _precision_cholesky(cov: np.ndarray) -> np.ndarray:
    """Upper factors P_k with P_k P_k' = inverse(cov_k), as scikit-learn computes them."""
    k, d, _ = cov.shape
    out = np.empty_like(cov)
    for j in range(k):
        try:
            chol = linalg.cholesky(cov[j], lower=True)
        except linalg.LinAlgError as exc:
            raise ValueError("Gaussian mixture fit: a covariance matrix is singular (the fitting sample is "
                             "degenerate); use a larger or more varied sample, or kmeans") from exc
        out[j] = linalg.solve_triangular(chol, np.eye(d), lower=True).T
    return out


def _log_resp(x: np.ndarray, weights, means, prec_chol, log_det) -> tuple[np.ndarray, np.ndarray]:
    """Per-row log responsibilities (n, k) and log-likelihoods (n,) of the mixture."""
    k, d = means.shape
    proj = x @ prec_chol.transpose(1, 0, 2).reshape(d, k * d)  # every component's X @ P_k in one product
    log_prob = np.empty((len(x), k))
    for j in range(k):
        y = proj[:, j * d:(j + 1) * d] - means[j] @ prec_chol[j]
        log_prob[:, j] = np.einsum("ij,ij->i", y, y)
    weighted = -0.5 * (d * np.log(2 * np.pi) + log_prob) + log_det + np.log(weights)
    norm = logsumexp(weighted, axis=1)
    return weighted - norm[:, None], norm


def _m_step(x: np.ndarray, resp: np.ndarray, reg_covar: float, rows: int):
    """Weights (k,), means (k, d), covariances (k, d, d) from responsibilities; two passes over x."""
    n, d = x.shape
    k = resp.shape[1]
    nk = resp.sum(axis=0) + 10 * np.finfo(resp.dtype).eps
    sums = np.zeros((k, d))
    for i in range(0, n, rows):
        sums += resp[i:i + rows].T @ x[i:i + rows]
    means = sums / nk[:, None]
    cov = np.zeros((k, d, d))
    for i in range(0, n, rows):
        xs = x[i:i + rows]
        for j in range(k):
            w = (xs - means[j]) * np.sqrt(resp[i:i + rows, j])[:, None]
            cov[j] += w.T @ w  # a.T @ a: numpy uses the symmetric rank-k update
    cov /= nk[:, None, None]
    cov[:, np.arange(d), np.arange(d)] += reg_covar
    return nk, means, cov


def fit_gaussian_mixture(x: np.ndarray, n_components: int = 2, seed: int = 42, tol: float = 1e-3,
                         reg_covar: float = 1e-6, max_iter: int = 100, rows: int = ROWS) -> dict:
    """GaussianMixture(n_components, covariance_type='full', random_state=seed).fit(x), streamed.

    ``x`` (n, d) float64 features. Returns weights (k,), means (k, d), precisions_cholesky
    (k, d, d), converged and n_iter: the attributes scikit-learn's model would have.
    """
    from sklearn.cluster import KMeans

    x = np.ascontiguousarray(x, dtype=np.float64)
    n = len(x)
    rng = np.random.RandomState(seed)  # what scikit-learn's check_random_state(seed) hands to KMeans
    labels = KMeans(n_clusters=n_components, n_init=1, random_state=rng, copy_x=False).fit(x).labels_
    resp = np.zeros((n, n_components))
    resp[np.arange(n), labels] = 1
    del labels
    nk, means, cov = _m_step(x, resp, reg_covar, rows)
    weights = nk / n
    prec = _precision_cholesky(cov)
    lower, converged, n_iter = -np.inf, False, 0
    for n_iter in range(1, max_iter + 1):
        prev = lower
        log_det = np.log(prec.reshape(n_components, -1)[:, ::x.shape[1] + 1]).sum(axis=1)
        total = 0.0
        for i in range(0, n, rows):  # E-step into resp, in place
            lr, norm = _log_resp(x[i:i + rows], weights, means, prec, log_det)
            resp[i:i + rows] = np.exp(lr)
            total += norm.sum()
        nk, means, cov = _m_step(x, resp, reg_covar, rows)
        weights = nk / nk.sum()
        prec = _precision_cholesky(cov)
        lower = total / n
        if abs(lower - prev) < tol:
            converged = True
            break
    if not converged:  # as scikit-learn does; the flag is also kept in the labels' metadata
        warnings.warn(f"Gaussian mixture fit did not converge in {max_iter} iterations (tol {tol})", stacklevel=2)
    return {"weights": weights, "means": means, "precisions_cholesky": prec, "converged": converged,
            "n_iter": n_iter, "lower_bound": float(lower)}
