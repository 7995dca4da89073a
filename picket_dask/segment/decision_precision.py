"""Certified mixed-precision labels: the Gaussian-mixture decision in float32, float64 where it could differ.

The decision of every voxel is the sign of s = sum_j lam_j (v_j . x)^2 + u . x + c (clustering.py).
apply.label_block evaluates it in float64 (``x @ [V | u]`` by BLAS, the squares, ``@ lam``, ``+ c``):
call that computed value s64 and its label ``s64 > 0``. Here the same expression runs in float32
(about twice the GEMM throughput) as S, next to a per-voxel bound B with

    |S - s| <= B32   and   |s64 - s| <= B64,   B = B32 + B64 (times SAFETY),

for the exact s of the same inputs. Where |S| > B, s has the sign of S and |s| > B64, so s64 has
that sign too: the label ``S > 0`` is the float64 path's label. The voxels with |S| <= B (or a
non-finite S) are recomputed by the float64 path itself (``scores_to_labels(x @ M64)``, the same
operations) on just their rows, padded to a multiple of ROW_BLOCK rows and to more than SMALL_GEMM
multiply-adds: OpenBLAS's dgemm then runs its main kernel on every row, as on the full tile (measured:
bit-equal rows with one BLAS thread, as the label pass runs; an odd row count ends in a remainder kernel,
and its AVX-512 builds send products of at most 100^3 multiply-adds to small-matrix kernels, both
summing in another order, whose last bits differ). A tile too small for that is recomputed whole,
the very product the float64 path forms. The label pass gathers the unsure rows of a block's tiles
and multiplies them together (``Recompute``): fewer, larger products, little padding. Should a BLAS still round such a row differently, its
label could differ only where |s| <= B64, where the float64 path's own label is not determined by
the data either (it already depends on the tile shape and on CPU vs GPU).

The bound (Higham, Accuracy and Stability of Numerical Algorithms, ch. 3), u = 2^-24, v = 2^-53,
gamma_k(w) = k w / (1 - k w), p inputs, rank r:

- a dot product computed in any order (BLAS blocking, FMA) satisfies
  |fl(a . b) - a . b| <= gamma_p |a| . |b|; rounding x and the columns m_j to float32 adds
  (2u + u^2) |x| . |m_j|; |x| . |m_j| <= ||x|| ||m_j|| (Cauchy-Schwarz), so
  |q_j - p_j| <= a ||x|| ||m_j|| with a = gamma_p (1 + u)^2 + 2u + u^2, q_j the float32 projection;
- squares: |fl(q^2) - p^2| <= u q^2 + e (2 |q| + e); the lam-weighted sum (float32 GEMV, and
  lam rounded to float32): gamma_r sum |lam| t + u sum |lam| t; the cross term
  2 sum |lam_j| e_j |q_j| <= 2 a ||x|| sum |lam_j| ||m_j|| |q_j| is computed as
  D = fl(|q| @ (|lam| ||m||)) (one GEMV), so every term rests on T = fl(sum |lam_j| fl(q_j^2)) (one
  more GEMV column next to the score's), D, ||x||^2 and |q_0| (the u column), each computed in float32
  and divided by its own worst rounding (folded into the coefficients);
- the two additions (+ c, + quadratic part) and c's rounding: u times their operands.

The float64 path's B64 is the same analysis with v (its inputs are exact), its projections bounded
by |q_j| + (a + gamma_p(v)) ||x|| ||m_j||. Everything collects into

    B = SAFETY * (K_T T + K_xD ||x|| D + K_xx ||x||^2 + K_x ||x|| + K_0 |q_0| + K_c + eta),

coefficients per decision (``_coefficients``), ||x||^2 computed in float32 per voxel (its rounding
folded in as kappa). The cross term is first bounded without D, by Cauchy-Schwarz
(sum |lam_j| ||m_j|| |q_j| <= sqrt(sum |lam_j| ||m_j||^2) sqrt(sum |lam_j| q_j^2): K_xT sqrt(||x||^2 T)),
and D is computed only for the voxels that bound leaves unsure. eta = ETA (1 + p)^2 (1 + sum|lam|)
(1 + max ||m_j||)^2 (1 + ||x||^2)^2 (1 + T), with the tile's largest ||x||^2, covers underflow
(flush-to-zero included: at most 2^-126 per operation, a low-degree polynomial in the same
quantities, far below 2^-96 times it). SAFETY = 1 + 2^-10 on every coefficient covers evaluating B
in float32 (about 20 roundings of non-negative numbers, each at most u), the coefficients' own
float64 and float32 rounding.
Rank truncation (``MixedDecisions(..., sample=)``). A Gaussian mixture's quadratic part usually has a
few large eigenvalues and many tiny ones (gabor-gmm on the dev set: 49, of which 26 below 1e-5 of the
largest). The float32 pass may keep only the k largest |lam_j|: with V's columns orthonormal,
|s - s_k| = |sum_dropped lam_j (v_j . x)^2| <= max_dropped |lam_j| ||V_dropped||^2 ||x||^2, added to B
(``_truncation_terms``, with the float64 path's error now bounded for the full decision, not the
truncated one: C (sum |lam_j| ||m_j||^2 ||x||^2 + ||u|| ||x|| + |c|), C = 16 gamma_{p+r+4}(v), four
times the sum of the dot products', squares', GEMV's and two additions' bounds). The voxels that
bound leaves unsure go to the full float64 path as before, so the labels do not depend on k; k only
moves time between the float32 pass and the recompute. It is chosen per block from a strided sample
of the block's own inputs (``truncation_rank``): the k minimising (k + 1) + RECOMPUTE_COST (r + 1)
x (share of the sample the truncated bound leaves unsure).
xp-generic (numpy or cupy).
"""

from __future__ import annotations

import math
import threading

import numpy as np

from .clustering import Decision, scores_to_labels, stacked_matrix

U32 = 2.0**-24
U64 = 2.0**-53
SAFETY = 1.0 + 2.0**-10
ETA = 2.0**-96
COEFFS = ("K_T", "K_xT", "K_xD", "K_xx", "K_x", "K_0", "K_c", "eta")
ROW_BLOCK = 16  # the float64 recompute runs on a multiple of this many rows (see above)
SMALL_GEMM = 100**3  # OpenBLAS (SkylakeX / Cooper Lake / Zen 4 kernels) computes dgemm of M*N*K <= this with
# small-matrix kernels, in another summation order: the recompute stays above it (measured, 0.3.31)
RECOMPUTE_COST = 4.0  # one float64 recomputed row vs one float32 row, per projection column: the GEMM in
# float64 (~2x), plus gathering, converting and padding the rows (~2x; measured on 2 cores, numpy + OpenBLAS)

# voxels labelled / recomputed in float64, summed over every call in this process
STATS = {"voxels": 0, "recomputed": 0}
_STATS_LOCK = threading.Lock()


def _gamma(k: int, w: float) -> float:
    """gamma_k = k w / (1 - k w): the relative error bound of k roundings."""
    return k * w / (1.0 - k * w)


def _coefficients(d: Decision) -> dict[str, float]:
    """The bound's coefficients (see the module docstring) for one decision, float64, rounded up
    by SAFETY later. K_T multiplies T, K_xT sqrt(||x||^2 T) or K_xD ||x|| D, K_xx ||x||^2, K_x ||x||, K_0 |q_0|."""
    u, v = U32, U64
    p, r = d.V.shape
    lam = np.abs(np.asarray(d.lam, np.float64))
    mnorm = np.linalg.norm(np.asarray(d.V, np.float64), axis=0)
    L2 = float(np.sum(lam * mnorm**2))
    unorm = float(np.linalg.norm(d.u))
    c = abs(float(d.c))
    gp, gr = _gamma(p, u), _gamma(r, u)
    g, gr64 = _gamma(p, v), _gamma(r, v)
    a = gp * (1 + u) ** 2 + 2 * u + u * u
    kappa = 1.0 / ((1 - u) * math.sqrt(1 - _gamma(p, u)))        # ||x|| <= kappa sqrt(fl(sum x^2))
    omega = 1.0 / ((1 - gr) * (1 - u) ** 2)                        # sum |lam| q^2 <= omega T, same for D
    # float32 path
    K_T = gr / (1 - gr) + u / ((1 - gr) * (1 - u)) + u * omega + u * (1 + gr) / (1 - gr)
    K_xT = 2 * a * kappa * math.sqrt(L2 * omega)                   # Cauchy-Schwarz form, times sqrt(||x||^2 T)
    K_xD = 2 * a * kappa * omega                                   # direct form, times ||x|| D
    K_xx = a * a * kappa**2 * L2
    K_x = a * kappa * unorm
    K_0 = u + u * (1 + u)
    K_c = u * c + u * (1 + u) * c + u * (1 + u) ** 2 * c
    # float64 path (exact inputs), its projections through |q| + (a + g) ||x|| ||m||
    P = gr64 * (1 + v) + v + v * (1 + gr64) * (1 + v)
    ag = a + g
    K_T += 2 * P * omega
    K_xT += 2 * g * kappa * math.sqrt(L2 * omega)
    K_xD += 2 * g * kappa * omega
    K_xx += (2 * P * ag**2 + 2 * g * ag + g * g) * kappa**2 * L2
    K_x += g * kappa * unorm + (2 * v + v * v) * ag * kappa * unorm
    K_0 += 2 * v + v * v
    K_c += (2 * v + v * v) * c
    mmax = float(mnorm.max()) if r else 0.0
    eta = ETA * (1 + p) ** 2 * (1 + float(lam.sum())) * (1 + max(mmax, unorm)) ** 2
    return {"K_T": K_T, "K_xT": K_xT, "K_xD": K_xD, "K_xx": K_xx, "K_x": K_x, "K_0": K_0, "K_c": K_c, "eta": eta}


def truncation_rank(d: Decision, sample) -> int:
    """How many of ``d``'s eigenvalues (largest |lam| first) the float32 pass keeps, chosen on ``sample``
    (n, p) inputs: the k minimising (k + 1) + RECOMPUTE_COST (r + 1) x the share of the sample with
    |s_k| <= max_dropped |lam| ||x||^2 (the truncation's own bound; the rounding bound is far smaller)."""
    r = d.V.shape[1]
    x = np.asarray(sample, np.float64)
    if r == 0 or x.shape[0] == 0:
        return r
    order = np.argsort(-np.abs(d.lam), kind="stable")
    lam = np.asarray(d.lam, np.float64)[order]
    q = x @ np.asarray(d.V, np.float64)[:, order]
    s_k = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(lam * q * q, axis=1)], axis=1) + (x @ d.u + d.c)[:, None]
    tail = np.append(np.abs(lam), 0.0)                      # max dropped |lam| when keeping k = index
    unsure = (np.abs(s_k) <= tail[None, :] * np.einsum("ij,ij->i", x, x)[:, None]).mean(axis=0)
    cost = np.arange(r + 1) + 1 + RECOMPUTE_COST * (r + 1) * unsure
    return int(np.argmin(cost))


def _truncation_terms(d: Decision, keep: np.ndarray) -> dict[str, float]:
    """Terms added to the bound when only the columns ``keep`` of ``d`` enter the float32 pass: the
    dropped part of the score, and the full decision's float64 error (module docstring)."""
    p, r = d.V.shape
    u = U32
    kappa2 = 1.0 / ((1 - u) ** 2 * (1 - _gamma(p, u)))        # ||x||^2 <= kappa2 fl(sum x^2)
    drop = np.setdiff1d(np.arange(r), keep)
    lam = np.abs(np.asarray(d.lam, np.float64))
    V = np.asarray(d.V, np.float64)
    vd2 = float(np.linalg.norm(V[:, drop], 2)) ** 2 * (1 + 2.0**-40) if drop.size else 0.0
    tail = float(lam[drop].max()) * vd2 if drop.size else 0.0
    C = 16 * _gamma(p + r + 4, U64)
    mnorm2 = np.linalg.norm(V, axis=0) ** 2
    return {"K_xx": (tail + C * float(np.sum(lam * mnorm2))) * kappa2,
            "K_x": C * float(np.linalg.norm(d.u)) * math.sqrt(kappa2), "K_c": C * abs(float(d.c))}


class MixedDecisions:
    """Decisions of one feature space prepared for ``certified_labels``: [V | u] in float32 and
    float64, the float32 [lam, |lam|] pairs and |lam| ||m|| weights, the bound's coefficients
    (float32, rounded up by SAFETY, which also covers evaluating B in float32).

    ``sample`` (n, p) inputs, e.g. a strided subset of the block: the float32 pass keeps only each
    decision's ``truncation_rank`` largest eigenvalues (same labels; see the module docstring).
    ``M64`` stays the full decisions' matrix, for the float64 recompute."""

    def __init__(self, decisions: list[Decision], M64, xp=np, sample=None):
        self.decisions = decisions
        self.xp = xp
        self.M64 = M64
        self.ranks = []
        passes = []
        for d in decisions:
            r = d.V.shape[1]
            k = r if sample is None else truncation_rank(d, sample)
            keep = np.sort(np.argsort(-np.abs(d.lam), kind="stable")[:k])
            passes.append(Decision(d.V[:, keep], np.asarray(d.lam)[keep], d.u, d.c, d.space) if k < r else d)
            self.ranks.append((k, r, keep))
        self.M32 = xp.asarray(stacked_matrix(passes), dtype=xp.float32)  # M64's columns, less the dropped ones
        self.lams, self.wts, self.coeffs, self.cols = [], [], [], []
        col = 0
        for d, dk, (k, r, keep) in zip(decisions, passes, self.ranks):
            lam = np.asarray(dk.lam, np.float32)
            self.lams.append(xp.asarray(np.stack([lam, np.abs(lam)], axis=1)) if k else None)
            self.wts.append(xp.asarray((np.abs(dk.lam) * np.linalg.norm(dk.V, axis=0)).astype(np.float32)) if k else None)
            c = _coefficients(dk)
            if k < r:
                for name, v in _truncation_terms(d, keep).items():
                    c[name] += v
            self.coeffs.append({name: float(np.float32(c[name] * SAFETY)) for name in COEFFS})
            self.cols.append((col, k, np.float32(d.c)))
            col += k + 1

    def scores_and_bounds(self, x32, refine: bool | str = True):
        """Per decision (S, B, rows): float32 scores (n,), bounds (n,) and the rows (ascending) with
        |S| <= B or non-finite S. B first takes the Cauchy-Schwarz form of the cross term,
        K_xT sqrt(||x||^2 T) (free: T comes with the score's GEMV); with ``refine``, the rows it
        leaves unsure get the direct form K_xD ||x|| D (a GEMV on those rows only; ``refine='all'``:
        every row). Inputs ``x32`` (n, p) float32."""
        xp = self.xp
        # projections as rows (cols, n): each column's values contiguous for the elementwise terms and
        # the lam-weighted sums (one small GEMM), ~10 % faster per tile than (n, cols) with strided columns
        proj = self.M32.T @ x32.T
        if xp is not np:
            xx = (x32 * x32).sum(axis=1)
        elif x32.flags.f_contiguous:  # the sum of squares along contiguous memory
            xx = xp.einsum("ij,ij->j", x32.T, x32.T)
        else:
            xx = xp.einsum("ij,ij->i", x32, x32)
        xn = xp.sqrt(xx)
        # underflow term eta (1 + ||x||^2)^2 (1 + T) with this tile's largest ||x||^2: into K_T and K_c
        grow = (1.0 + float(xx.max())) ** 2 if xx.shape[0] else 1.0
        out = []
        for (col, r, c32), lam, wt, k in zip(self.cols, self.lams, self.wts, self.coeffs):
            eta = float(np.float32(k["eta"] * grow * SAFETY))
            q0 = proj[col + r]
            S = q0 + c32
            B = k["K_x"] * xn
            B += k["K_xx"] * xx
            B += k["K_0"] * xp.abs(q0)
            B += k["K_c"] + eta
            if r:
                q = proj[col:col + r]
                QT = lam.T @ (q * q)
                T = QT[1]
                S += QT[0]
                Bx = B + (k["K_T"] + eta) * T
                B = Bx + k["K_xT"] * xp.sqrt(xx * T)
            rows = xp.flatnonzero(~(xp.abs(S) > B))  # NaN / inf scores are unsure too
            if refine == "all":  # every row in the direct form (tests)
                rows = xp.arange(S.shape[0])
            if r and refine and rows.shape[0]:
                B[rows] = Bx[rows] + k["K_xD"] * xn[rows] * (wt @ xp.abs(q[:, rows]))
                rows = rows[~(xp.abs(S[rows]) > B[rows])]
            out.append((S, B, rows))
        return out


def _recompute_rows(rows, n: int, flops_per_row: int, xp=np):
    """The rows (indices into a tile of ``n`` rows) the float64 recompute multiplies: ``rows`` repeated at
    the end up to a multiple of ROW_BLOCK that is also more than SMALL_GEMM multiply-adds
    (``flops_per_row``: p x the matrix's columns), so that OpenBLAS uses the kernel the whole tile's
    product used; every row of the tile when that is not fewer."""
    k = int(rows.shape[0])
    target = _padded_count(k, flops_per_row)
    if target >= n:
        return xp.arange(n)
    return xp.concatenate([rows, xp.repeat(rows[-1:], target - k)]) if target > k else rows


def _padded_count(k: int, flops_per_row: int) -> int:
    """Rows a recompute of ``k`` rows multiplies: a multiple of ROW_BLOCK, more than SMALL_GEMM multiply-adds."""
    need = -(-(SMALL_GEMM + 1) // max(1, flops_per_row))
    return -(-max(k, need) // ROW_BLOCK) * ROW_BLOCK


class Recompute:
    """The unsure voxels of a block's tiles, relabelled by the float64 path in shared products.

    One product per tile would be small (a few unsure rows of gabor-gmm's 0.1-0.6 %) and, padded past
    SMALL_GEMM, mostly padding; here the rows of successive tiles are gathered (their float64 inputs,
    at most ``flush_rows`` at a time: 16 MiB at 125 inputs) and multiplied together, each row's result
    the one the tile's own product gives (the main kernel; tests/test_decision_precision.py). The tiles'
    label arrays are completed in place by ``flush``: the caller writes them out after the last flush."""

    def __init__(self, mixed: "MixedDecisions", flush_rows: int = 1 << 14):
        self.mixed, self.flush_rows = mixed, flush_rows
        self.x64, self.parts, self.n = [], [], 0

    def add(self, x64, labels: list, rows) -> None:
        """Queue float64 inputs ``x64`` (k, p) of tile ``rows`` (k,) whose ``labels`` (one array per decision) they fix."""
        self.x64.append(x64)
        self.parts.append((labels, rows))
        self.n += int(rows.shape[0])
        if self.n >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if not self.n:
            return
        xp, m = self.mixed.xp, self.mixed
        x = xp.concatenate(self.x64) if len(self.x64) > 1 else self.x64[0]
        pad = _padded_count(self.n, int(x.shape[1]) * int(m.M64.shape[1])) - self.n
        if pad:
            x = xp.concatenate([x, xp.repeat(x[-1:], pad, axis=0)])
        labs = scores_to_labels(x @ m.M64, m.decisions, xp)
        at = 0
        for labels, rows in self.parts:
            k = int(rows.shape[0])
            for lab, lab64 in zip(labels, labs):
                lab[rows] = lab64[at:at + k]
            at += k
        self.x64, self.parts, self.n = [], [], 0


def certified_labels(mixed: MixedDecisions, x32, x64_rows, recompute: Recompute | None = None) -> list:
    """Cluster ids (n,) uint8 per decision, equal to ``scores_to_labels(x64 @ M64)``'s.

    ``x32`` (n, p) float32: the inputs rounded to float32; ``x64_rows(rows)``: the float64 inputs
    (len(rows), p) of those rows (called only when some voxel needs the float64 path). With
    ``recompute``, rows too few for a product of more than SMALL_GEMM multiply-adds are queued there
    and the labels are final after its ``flush``; more are recomputed at once."""
    xp = mixed.xp
    labels, unsure = [], []
    for S, _, rows in mixed.scores_and_bounds(x32):
        labels.append((S > 0).astype(xp.uint8))
        unsure.append(rows)
    rows = xp.unique(xp.concatenate(unsure)) if len(unsure) > 1 else unsure[0]
    k = int(rows.shape[0])
    per_row = int(x32.shape[1]) * int(mixed.M64.shape[1])
    if k and recompute is not None and k * per_row <= SMALL_GEMM:  # too few for the main kernel alone: shared
        recompute.add(x64_rows(rows), labels, rows)
    elif k:
        padded = _recompute_rows(rows, int(x32.shape[0]), per_row, xp)
        for lab, lab64 in zip(labels, scores_to_labels(x64_rows(padded) @ mixed.M64, mixed.decisions, xp)):
            lab[rows] = lab64[rows] if padded.shape[0] == x32.shape[0] else lab64[:k]  # the whole tile, or rows first
    with _STATS_LOCK:
        STATS["voxels"] += int(x32.shape[0])
        STATS["recomputed"] += k
    return labels
