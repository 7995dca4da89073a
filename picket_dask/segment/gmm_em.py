"""scikit-learn's GaussianMixture (full covariance, k-means init), run a slice of rows at a time.

Why by hand: scikit-learn's EM allocates several (n, d) float64 temporaries per component and
step (X - mu, resp * (X - mu).T, X @ P), so a 1M x 64 sample peaks at ~3x its own size; dask-ml
has no mixture model. This is the same algorithm with the same numbers: the k-means
initialisation (KMeans(n_init=1) with the mixture's RandomState), E-step, M-step with reg_covar on
the diagonal, Cholesky precisions, and the stop rule |change of the mean log-likelihood| < tol.
Results agree with scikit-learn to rounding (tests/test_segment.py compares parameters and
iteration counts). What differs is only how the sums are formed, for speed:

- one pass over the sample per iteration: each slice's E-step (with the current parameters) is
  followed at once by its M-step sums (counts, first and second moments), so the responsibilities
  are never stored and the sample is read once per iteration instead of three times;
- rows augmented with a column of ones ([x - mean, 1], _Slices): one weighted Gram
  [x, 1]' r [x, 1] holds a component's second moments, first moments and count, and the E-step's
  offsets ride in its product, so no extra (rows, d) passes form them;
- second moments about the sample mean: sum_i r_ik x_i x_i' = S - sum_{j != k} ..., with
  S = X'X formed once, so one component's weighted Gram (a symmetric rank-k update) is skipped
  each iteration (the one with the most weight; rows' responsibilities sum to one);
- a pass split over threads (``threads``, fit_threads.RowRanges), each range with one BLAS
  thread: half of a pass is elementwise numpy, which a single thread leaves on one core;
- two components: one product gives both Mahalanobis distances. With y = (x - mu0) P0,
  |y|^2 is component 0's and (x - mu1) L1 (x - mu1)' = y M y' + 2 y g + c with M = B B',
  B = P0^-1 P1; writing M = U D U' (eigh) and t = y U, component 1's is sum D t^2 + 2 t.(U'g) + c
  (the two precisions diagonalised together), so the E-step costs one (n, d) x (d, d) product;
- one feature (the k-means mixture cut): the same steps on contiguous (k, rows) arrays (_fit_1d).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg
from scipy.special import logsumexp

from .fit_threads import RowRanges

GMM_ROWS = 8192  # rows per slice: (rows, d) float64 temporaries stay in cache (8 MiB at d = 125)
GPU_ROWS = 1 << 18  # rows per slice on a GPU: large products, few kernel launches (256 MiB at d = 125)
GMM_TOL = 1e-3  # EM stops when the mean log-likelihood per row changes less than this (scikit-learn's tol)
REG_COVAR = 1e-6  # added to every covariance's diagonal (scikit-learn's reg_covar): keeps it invertible
ROWS_1D = 32  # a one-feature fit takes 32x the rows per slice ((k, rows) temporaries: 4 MiB at k = 2, GMM_ROWS)
_TINY = 1e-150   # responsibilities below this add < 1e-150 of a row to a sum: flushed (subnormal products are slow)


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


class _Estep:
    """Log-likelihood terms of each component for augmented rows [x - shift, 1] (Slices' buffers)."""

    def __init__(self, weights, means, prec_chol, shift, xp=np):
        k, d = means.shape
        self.xp, self.k = xp, k
        log_det = np.log(prec_chol.reshape(k, -1)[:, ::d + 1]).sum(axis=1)
        self.const = -0.5 * d * np.log(2 * np.pi) + log_det + np.log(weights)  # (k,)
        mc = means - shift
        if k == 2:  # both precisions diagonalised together: one product per slice
            p0, p1 = prec_chol
            B = linalg.solve_triangular(p0, p1, lower=False)             # P0^-1 P1 (P0 is upper)
            D, U = np.linalg.eigh(B @ B.T)
            delta = mc[0] - mc[1]
            T = p0 @ U
            off = mc[0] @ T
            self.g2 = xp.asarray(2 * (U.T @ (B @ (delta @ p1))))
            self.W = xp.asarray(np.stack([np.ones(d), D], axis=1))       # t^2 @ W: sum t^2 and sum D t^2
            self.const = self.const - 0.5 * np.array([0.0, float((delta @ p1) @ (delta @ p1))])
        else:  # every component's X @ P_k in one product
            T = prec_chol.transpose(1, 0, 2).reshape(d, k * d)
            off = np.concatenate([mc[j] @ prec_chol[j] for j in range(k)])
        # the ones column times the last row subtracts the offset inside the product
        self.T = xp.asarray(np.vstack([T, -off[None, :]]))

    def log_prob(self, xa):
        """(rows, k) weighted log-probabilities of augmented rows ``xa`` (rows, d + 1)."""
        xp = self.xp
        t = xa @ self.T
        if self.k == 2:
            lin = t @ self.g2
            xp.multiply(t, t, out=t)
            maha = t @ self.W
            maha[:, 1] += lin
        else:
            d = xa.shape[1] - 1
            maha = (t * t).reshape(len(t), self.k, d).sum(axis=2)
        return -0.5 * maha + xp.asarray(self.const)


def _log_normalise(weighted, xp=np):
    """Per-row log-sum-exp (rows,) and log responsibilities (rows, k)."""
    if weighted.shape[1] == 2:  # closed form of logsumexp for two terms
        hi = xp.maximum(weighted[:, 0], weighted[:, 1])
        norm = hi + xp.log1p(xp.exp(-xp.abs(weighted[:, 0] - weighted[:, 1])))
    else:
        norm = xp.asarray(logsumexp(weighted, axis=1)) if xp is np else _lse(weighted, xp)
    return norm, weighted - norm[:, None]


def _lse(a, xp):
    hi = a.max(axis=1)
    return hi + xp.log(xp.exp(a - hi[:, None]).sum(axis=1))


class _Slices:
    """The sample's rows ``parts`` ((first row, end) slices) a slice at a time, centred on ``shift``
    and augmented with a column of ones.

    Why the ones column: with it one product gives a component's Gram, first moment and count
    together ([x, 1]' r [x, 1]), and the E-step's offsets ride in its product (_Estep), so no
    separate (rows, d) passes form them. One buffer is reused for every slice.
    """

    def __init__(self, x, shift, parts: list[tuple[int, int]], xp=np):
        self.x, self.xp, self.parts = x, xp, parts
        self.shift = xp.asarray(shift)
        d = x.shape[1]
        self.buf = xp.empty((max((b - a for a, b in parts), default=0), d + 1))
        self.buf[:, d] = 1.0

    def __iter__(self):
        d = self.x.shape[1]
        for a, b in self.parts:
            xa = self.buf[:b - a]
            self.xp.subtract(self.x[a:b], self.shift, out=xa[:, :d])
            yield a, b, xa


class _Moments:
    """Running sums of one M-step: augmented Grams [x, 1]' r_j [x, 1] (d + 1, d + 1) of every component
    but ``skip`` (its own is the total's remainder: the rows' responsibilities sum to one)."""

    def __init__(self, k: int, d: int, skip: int, xp=np):
        self.xp, self.skip, self.k = xp, skip, k
        self.grams = {j: xp.zeros((d + 1, d + 1)) for j in range(k) if j != skip}

    def add(self, xa, resp) -> None:
        """Add augmented rows ``xa`` (rows, d + 1) with responsibilities ``resp`` (rows, k)."""
        xp = self.xp
        for j, g in self.grams.items():
            r = resp[:, j]
            w = xa * xp.sqrt(xp.where(r < _TINY, 0.0, r))[:, None]
            g += w.T @ w  # a.T @ a: the symmetric rank-k update

    @staticmethod
    def merged(parts: list) -> "_Moments | None":
        """The sums of several ranges' _Moments (in list order) in the first of them."""
        first = parts[0]
        if first is None:
            return None
        for other in parts[1:]:
            for j, g in first.grams.items():
                g += other.grams[j]
        return first


def _m_step(m: _Moments, total_gram, shift: np.ndarray, reg_covar: float):
    """Counts (k,), means (k, d), covariances (k, d, d) (host arrays) from one pass's augmented Grams.

    Covariance k = (second moment about the shift)/nk - (mean - shift)(mean - shift)'; the skipped
    component's Gram is the total augmented Gram minus the others'.
    """
    xp = m.xp
    grams = {j: _host(g, xp) for j, g in m.grams.items()}
    grams[m.skip] = _host(total_gram, xp) - sum(grams.values())
    d = len(shift)
    nk = np.array([grams[j][d, d] for j in range(m.k)]) + 10 * np.finfo(np.float64).eps
    mc = np.stack([grams[j][d, :d] for j in range(m.k)]) / nk[:, None]
    cov = np.stack([grams[j][:d, :d] / nk[j] - np.outer(mc[j], mc[j]) for j in range(m.k)])
    cov = 0.5 * (cov + cov.transpose(0, 2, 1))
    cov[:, np.arange(d), np.arange(d)] += reg_covar
    return nk, mc + shift, cov


def _host(a, xp):
    return a if xp is np else xp.asnumpy(a)


def _hard_labels(x, k, seed, init_labels, xp) -> np.ndarray:
    """scikit-learn's k-means initialisation: KMeans(k, n_init=1) labels of ``x`` (or the given ones)."""
    if init_labels is not None:
        return np.asarray(init_labels)
    from .kmeans_sklearn import StreamedTolKMeans

    rng = np.random.RandomState(seed)  # what scikit-learn's check_random_state(seed) hands to KMeans
    return StreamedTolKMeans(n_clusters=k, n_init=1, random_state=rng, copy_x=False).fit(_host(x, xp)).labels_


class _Parts:
    """The sample's row ranges (fit_threads.RowRanges: one per thread) and each range's _Slices."""

    def __init__(self, x, shift, xp, ranges: RowRanges):
        self.ranges, self.d = ranges, x.shape[1]
        self.slices = {lo: _Slices(x, shift, ranges.slices(lo, hi), xp) for lo, hi in ranges.ranges}  # by first row

    def map(self, fn) -> list:
        """[fn(slices)] over the ranges' _Slices, in range order."""
        return self.ranges.map(lambda lo, hi: fn(self.slices[lo]))


def _first_pass(parts: _Parts, k: int, labels, xp):
    """One pass over the sample: the total augmented Gram (formed once for every iteration) and,
    given hard ``labels``, their M-step sums (else None)."""
    d = parts.d
    skip = None if labels is None else int(np.argmax(np.bincount(labels, minlength=k)))
    labels = None if labels is None else xp.asarray(labels)

    def one(slices):
        init = None if labels is None else _Moments(k, d, skip, xp)
        total = xp.zeros((d + 1, d + 1))
        for a, b, xa in slices:
            if init is not None:
                init.add(xa, (labels[a:b, None] == xp.arange(k)[None, :]).astype(xp.float64))
            total += xa.T @ xa
        return total, init
    done = parts.map(one)
    return sum(t for t, _ in done), _Moments.merged([m for _, m in done])


def fit_gaussian_mixture(x, n_components: int = 2, seed: int = 42, tol: float = GMM_TOL,
                         reg_covar: float = REG_COVAR, max_iter: int = 100, rows: int = GMM_ROWS, xp=None,
                         init_labels: np.ndarray | None = None, init_params: dict | None = None,
                         threads: int = 1) -> dict:
    """GaussianMixture(n_components, covariance_type='full', random_state=seed).fit(x), streamed.

    ``x`` (n, d) float64 features: numpy, or cupy (``xp``: its module), when the EM runs on the
    GPU (the k-means initialisation is scikit-learn's, on the host). Returns weights (k,), means
    (k, d), precisions_cholesky (k, d, d) as numpy arrays, converged, n_iter and lower_bound:
    the attributes scikit-learn's model would have. ``init_labels`` (n,): the labels of
    KMeans(n_components, random_state=seed) already fitted on the same ``x`` (the k-means
    clusterer's own fit is that very model), used instead of fitting it again. ``init_params``:
    weights, means and precisions_cholesky to start the EM from instead of the k-means
    initialisation (a warm start, e.g. from a fit on a subsample; scikit-learn's ``_initialize``
    with given parameters). ``threads``: passes split over this many threads, each with one BLAS
    thread (fit_threads.RowRanges; numpy only); the sums differ from one thread's by rounding only.
    """
    xp = xp or np
    x = xp.ascontiguousarray(x, dtype=xp.float64)
    n, d = x.shape
    k = n_components
    if d == 1 and xp is np:  # one feature: the same EM on contiguous (k, rows) arrays, no matrix products
        return _fit_1d(x, k, seed, tol, reg_covar, max_iter, rows * ROWS_1D, init_labels, init_params, threads)
    shift = _host(x.mean(axis=0), xp)  # sums are taken about the sample mean (less cancellation)
    threads = threads if xp is np else 1
    # the k-means initialisation before the threads' BLAS limit: scikit-learn's k-means has its own threads
    labels = None if init_params is not None else _hard_labels(x, k, seed, init_labels, xp)
    with RowRanges(n, rows, threads) as ranges:
        return _em(x, _Parts(x, shift, xp, ranges), shift, k, tol, reg_covar, max_iter, xp, labels, init_params)


def _em(x, parts: _Parts, shift: np.ndarray, k: int, tol: float, reg_covar: float, max_iter: int, xp,
        labels, init_params) -> dict:
    """fit_gaussian_mixture's EM over ``parts``, from ``init_params`` or the hard k-means ``labels``."""
    n, d = x.shape
    if init_params is not None:  # warm start: only the total Gram is formed before the EM
        total, _ = _first_pass(parts, k, None, xp)
        weights = np.asarray(init_params["weights"], np.float64)
        means = np.asarray(init_params["means"], np.float64)
        prec = np.asarray(init_params["precisions_cholesky"], np.float64)
        nk = weights * n
    else:  # the M-step of the hard k-means labels
        total, init = _first_pass(parts, k, labels, xp)
        nk, means, cov = _m_step(init, total, shift, reg_covar)
        weights = nk / n
        prec = _precision_cholesky(cov)
    lower, converged, n_iter = -np.inf, False, 0
    for n_iter in range(1, max_iter + 1):
        prev = lower
        e = _Estep(weights, means, prec, shift, xp)
        skip = int(np.argmax(nk))

        def one(slices):  # E-step of a slice, then its M-step sums: one pass over the sample
            m, ll = _Moments(k, d, skip, xp), 0.0
            for _, _, xa in slices:
                norm, log_resp = _log_normalise(e.log_prob(xa), xp)
                ll = ll + norm.sum()  # stays on the device until the pass ends
                m.add(xa, xp.exp(log_resp))
            return m, ll
        done = parts.map(one)
        m, ll = _Moments.merged([m for m, _ in done]), sum(float(v) for _, v in done)
        nk, means, cov = _m_step(m, total, shift, reg_covar)
        weights = nk / nk.sum()
        prec = _precision_cholesky(cov)
        lower = float(ll) / n
        if abs(lower - prev) < tol:
            converged = True
            break
    if not converged:  # as scikit-learn does; the flag is also kept in the labels' metadata
        warnings.warn(f"Gaussian mixture fit did not converge in {max_iter} iterations (tol {tol})", stacklevel=3)
    return {"weights": weights, "means": means, "precisions_cholesky": prec, "converged": converged,
            "n_iter": n_iter, "lower_bound": float(lower)}


def posterior(params: dict, x, xp=np):
    """Responsibilities (n, k) of rows ``x`` (n, d) under fitted ``params`` (fit_gaussian_mixture's):
    scikit-learn's GaussianMixture.predict_proba with those parameters."""
    x = xp.asarray(x, dtype=xp.float64)
    e = _Estep(params["weights"], params["means"], params["precisions_cholesky"], np.zeros(x.shape[1]), xp)
    xa = xp.concatenate([x, xp.ones((len(x), 1))], axis=1)
    return xp.exp(_log_normalise(e.log_prob(xa), xp)[1])


def _fit_1d(x: np.ndarray, k: int, seed: int, tol: float, reg_covar: float, max_iter: int, rows: int,
            init_labels: np.ndarray | None, init_params: dict | None, threads: int = 1) -> dict:
    """fit_gaussian_mixture for one feature (``x`` (n, 1) float64, numpy): the same initialisation,
    EM steps and stop rule, with each slice's terms as contiguous (k, rows) arrays: (rows, k) arrays'
    strided reductions and one-column products would dominate (the mixture cut's fit on 1M rows).
    ``threads``: each pass's slices split into that many row ranges (RowRanges), summed in order."""
    v = x[:, 0]
    n = len(v)
    shift = float(v.mean())  # sums about the sample mean, as in fit_gaussian_mixture
    if init_params is not None:
        weights = np.asarray(init_params["weights"], np.float64)
        means = np.asarray(init_params["means"], np.float64).reshape(k)
        prec = np.asarray(init_params["precisions_cholesky"], np.float64).reshape(k)
        nk = weights * n
    else:  # the M-step of the hard k-means labels
        labels = _hard_labels(x, k, seed, init_labels, np)
        vc = v - shift
        nk, means, prec = _m_step_1d(np.bincount(labels, minlength=k).astype(np.float64),
                                     np.bincount(labels, vc, minlength=k), np.bincount(labels, vc * vc, minlength=k),
                                     shift, reg_covar)
        weights = nk / n
    lower, converged, n_iter = -np.inf, False, 0
    with RowRanges(n, rows, threads) as ranges:
        for n_iter in range(1, max_iter + 1):
            prev = lower
            const = (-0.5 * np.log(2 * np.pi) + np.log(prec) + np.log(weights))[:, None]  # (k, 1)
            mc, pc = (means - shift)[:, None], prec[:, None]

            def one(lo: int, hi: int, const=const, mc=mc, pc=pc):
                s0, s1, s2, ll = np.zeros(k), np.zeros(k), np.zeros(k), 0.0
                for a, b in ranges.slices(lo, hi):
                    vc = v[a:b] - shift
                    z = (vc[None, :] - mc) * pc
                    w = -0.5 * (z * z) + const                                # (k, rows) weighted log-probabilities
                    if k == 2:
                        norm = np.maximum(w[0], w[1]) + np.log1p(np.exp(-np.abs(w[0] - w[1])))
                    else:
                        norm = logsumexp(w, axis=0)
                    r = np.exp(w - norm)
                    r[r < _TINY] = 0.0
                    ll += norm.sum()
                    s0 += r.sum(axis=1)
                    s1 += r @ vc
                    s2 += r @ (vc * vc)
                return s0, s1, s2, ll
            done = ranges.map(one)
            s0, s1, s2, ll = (sum(p[i] for p in done) for i in range(4))
            nk, means, prec = _m_step_1d(s0, s1, s2, shift, reg_covar)
            weights = nk / nk.sum()
            lower = ll / n
            if abs(lower - prev) < tol:
                converged = True
                break
    if not converged:
        warnings.warn(f"Gaussian mixture fit did not converge in {max_iter} iterations (tol {tol})", stacklevel=3)
    return {"weights": weights, "means": means[:, None], "precisions_cholesky": prec[:, None, None],
            "converged": converged, "n_iter": n_iter, "lower_bound": float(lower)}


def _m_step_1d(s0, s1, s2, shift: float, reg_covar: float):
    """Counts (k,), means (k,) and precision Cholesky factors 1/sd (k,) from the sums of
    responsibilities, r (x - shift) and r (x - shift)^2."""
    nk = s0 + 10 * np.finfo(np.float64).eps
    mc = s1 / nk
    var = s2 / nk - mc * mc + reg_covar
    if not np.all(var > 0):
        raise ValueError("Gaussian mixture fit: a variance is not positive (the fitting sample is degenerate)")
    return nk, mc + shift, 1.0 / np.sqrt(var)
