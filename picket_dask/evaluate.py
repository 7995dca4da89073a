"""Assessment as in the paper: precision, recall, F1 within a distance threshold, relative recall;
and the same one to one.

Distances are in voxels; the threshold in Angstrom is converted with the largest voxel size and
rounded (100 A on simulated data, 125 A on real data in the paper).

The paper's rule counts a pick as true when *some* particle lies within the threshold, and a
particle as found when *some* pick does: two picks on one ribosome are both true, and a pick
between two particles finds both. The one-to-one scores (``matched_*``) pair each pick with at most
one particle and each particle with at most one pick (a maximum bipartite matching of the pairs
within the threshold, as a picked particle enters a subtomogram average once), so duplicates count
as false picks; they are never above the paper's numbers. ``duplicates``: picks within the threshold
of a particle that are left without one in the matching (a second pick on a particle already
matched, or one that the matching could not give its own).

A ``Region``: the truth is complete only inside a box (a user annotated every particle there, the
usual check of a picker on real data). Precision is then counted over the picks at least the threshold
inside the box (every particle they could match is annotated), recall over the particles at least the
threshold inside it (every pick that could find them is there, inside the box or not); a side of the box
on the volume's face needs no margin. Both equal what complete truth would give for those picks and
particles (tests/test_outputs.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree


@dataclass
class Scores:
    """Scores of one set of picks against one truth set."""

    n_picks: int
    n_truth: int
    threshold_vox: int
    precision: float
    recall: float
    f1: float
    random_recall: float
    relative_recall: float
    recall_by_type: dict = field(default_factory=dict)
    matched_precision: float = 0.0
    matched_recall: float = 0.0
    matched_f1: float = 0.0
    duplicates: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def threshold_vox(threshold_A: float, voxel_size) -> int:
    """The threshold in voxels: Angstrom / largest voxel size, rounded."""
    return int(round(threshold_A / float(np.max(voxel_size))))


def within(a: np.ndarray, b: np.ndarray, thr: float) -> np.ndarray:
    """For each row of ``a`` (n, 3): is some row of ``b`` within ``thr`` (Euclidean, voxels)? The matching
    rule of the F1 (a pick is a true positive when a truth centre lies within the threshold, and back)."""
    if len(a) == 0:
        return np.zeros(0, bool)
    if len(b) == 0:
        return np.zeros(len(a), bool)
    d, _ = cKDTree(b).query(a, k=1, distance_upper_bound=thr + 1e-9)
    return np.isfinite(d)


def matching(a: np.ndarray, b: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray]:
    """A maximum one-to-one matching between rows of ``a`` and ``b`` ((n, 3), voxels) at most ``thr`` apart
    (scipy's Hopcroft-Karp on the sparse graph of those pairs): which rows of each are matched."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    a_matched, b_matched = np.zeros(len(a), bool), np.zeros(len(b), bool)
    if len(a) == 0 or len(b) == 0:
        return a_matched, b_matched
    pairs = cKDTree(a).sparse_distance_matrix(cKDTree(b), thr + 1e-9, output_type="coo_matrix")
    graph = coo_matrix((np.ones(pairs.nnz, np.int8), (pairs.row, pairs.col)), shape=(len(a), len(b))).tocsr()
    col = maximum_bipartite_matching(graph, perm_type="column")  # per row of a: its column of b, or -1
    a_matched = col >= 0
    b_matched[col[a_matched]] = True
    return a_matched, b_matched


def matched_pairs(a: np.ndarray, b: np.ndarray, thr: float) -> int:
    """Size of a maximum one-to-one matching between rows of ``a`` and ``b`` at most ``thr`` apart."""
    return int(matching(a, b, thr)[0].sum())


@dataclass(frozen=True)
class Region:
    """A box of the tomogram whose particles are all annotated: voxels ``lo`` .. ``hi`` - 1 per axis (z, y, x),
    as slices; a point (voxels, origin at the centre of voxel 0) lies in it when lo - 0.5 <= p < hi - 0.5."""

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]

    @classmethod
    def from_bounds(cls, bounds, shape_zyx) -> "Region":
        """From Z0 Z1 Y0 Y1 X0 X1 (the CLI's ``--region``), checked against the tomogram's shape."""
        from .errors import PicketError

        b = [int(v) for v in bounds]
        lo, hi = tuple(b[0::2]), tuple(b[1::2])
        if any(a < 0 or a >= z or c > n for a, z, c, n in zip(lo, hi, hi, shape_zyx)):
            raise PicketError(f"--region {' '.join(map(str, b))}", f"is not a box of the tomogram of shape {tuple(shape_zyx)} "
                              "(Z0 Z1 Y0 Y1 X0 X1: voxels Z0..Z1-1 and so on)", "give 0 <= start < end <= size on each axis")
        return cls(lo, hi)

    def bounds(self, margin: float = 0.0, shape_zyx=None) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi) per axis (voxel coordinates) of the box shrunk by ``margin`` voxels on each side, but not on a
        side that lies on the volume's face (``shape_zyx``; nothing is outside there)."""
        shape = np.asarray(shape_zyx if shape_zyx is not None else np.full(3, np.inf), float)
        lo = np.asarray(self.lo, float) - 0.5 + margin * (np.asarray(self.lo) > 0)
        hi = np.asarray(self.hi, float) - 0.5 - margin * (np.asarray(self.hi) < shape)
        return lo, hi

    def inside(self, points: np.ndarray, margin: float = 0.0, shape_zyx=None) -> np.ndarray:
        """Rows of ``points`` (n, 3) in the box shrunk as ``bounds`` says."""
        p = np.asarray(points, float).reshape(-1, 3)
        lo, hi = self.bounds(margin, shape_zyx)
        return np.all((p >= lo) & (p < hi), axis=1)

    def masks(self, picks: np.ndarray, truth: np.ndarray, thr: float, shape_zyx):
        """(picks scored for precision, particles that are annotated, particles scored for recall, picks in the box)."""
        from .errors import PicketError

        pe, te = self.inside(picks, thr, shape_zyx), self.inside(truth, thr, shape_zyx)
        lo, hi = self.bounds(thr, shape_zyx)
        if np.any(hi <= lo):
            raise PicketError(f"--region {self.describe()}", f"leaves nothing to score once the match distance "
                              f"({thr:g} voxels) is kept from its sides inside the volume", "annotate a larger box")
        return pe, self.inside(truth, 0.0), te, self.inside(picks, 0.0)

    def describe(self) -> str:
        return " ".join(f"{a} {b}" for a, b in zip(self.lo, self.hi))


def scored_masks(region: Region | None, picks: np.ndarray, truth: np.ndarray, thr: float, shape_zyx):
    """``Region.masks``, or every pick and particle when there is no region."""
    if region is not None:
        return region.masks(picks, truth, thr, shape_zyx)
    return np.ones(len(picks), bool), np.ones(len(truth), bool), np.ones(len(truth), bool), np.ones(len(picks), bool)


def _hm(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def score(picks_zyx: np.ndarray, truth_zyx: np.ndarray, shape_zyx, thr_vox: int, truth_types=None,
          n_random: int = 10, seed: int = 0, region: Region | None = None) -> Scores:
    """Precision, recall, F1 and relative recall (recall vs picks placed uniformly at random;
    the random baseline is averaged over ``n_random`` seeded draws). ``region``: the truth is complete only
    there (module docstring); ``n_picks`` and ``n_truth`` are then the picks and particles scored."""
    picks = np.asarray(picks_zyx, float).reshape(-1, 3)
    truth = np.asarray(truth_zyx, float).reshape(-1, 3)
    pe, tr, te, pr = scored_masks(region, picks, truth, thr_vox, shape_zyx)
    tp_pred = within(picks[pe], truth[tr], thr_vox)
    found = within(truth[te], picks, thr_vox)
    precision = float(tp_pred.mean()) if len(tp_pred) else 0.0
    recall = float(found.mean()) if len(found) else 0.0
    rng = np.random.default_rng(seed)
    rand = [float(within(truth[te], rng.uniform(0, np.asarray(shape_zyx, float) - 1, size=(len(picks), 3)), thr_vox).mean())
            if te.any() else 0.0 for _ in range(n_random)]
    random_recall = float(np.mean(rand))
    by_type = {}
    if truth_types is not None and te.any():
        types = np.asarray(truth_types)[te]
        by_type = {str(t): float(found[types == t].mean()) for t in sorted(set(types.tolist()))}
    # one to one: a maximum matching of the picks in the box to the annotated particles; scored as above
    p_matched, t_matched = matching(picks[pr], truth[tr], thr_vox)
    pick_matched = np.zeros(len(picks), bool)
    pick_matched[np.flatnonzero(pr)[p_matched]] = True
    truth_matched = np.zeros(len(truth), bool)
    truth_matched[np.flatnonzero(tr)[t_matched]] = True
    n_pe, n_te = int(pe.sum()), int(te.sum())
    m_prec = pick_matched[pe].sum() / n_pe if n_pe else 0.0
    m_rec = truth_matched[te].sum() / n_te if n_te else 0.0
    return Scores(n_pe, n_te, thr_vox, precision, recall, _hm(precision, recall), random_recall,
                  _hm(recall, 1 - random_recall), by_type, float(m_prec), float(m_rec), _hm(m_prec, m_rec),
                  int(tp_pred.sum()) - int(pick_matched[pe].sum()))


def zyx(df: pd.DataFrame) -> np.ndarray:
    return df[["z", "y", "x"]].to_numpy(float)


def evaluate_files(picks_path, truth_path, shape_zyx, voxel_size, threshold_A: float = 100.0,
                   region: Region | None = None) -> Scores:
    """Score a picks file against a truth file (formats as io.picks.read_points); ``region``: see ``score``."""
    from .io.picks import read_points

    vs = float(np.max(voxel_size))
    picks = read_points(picks_path, vs, shape_zyx)
    truth = read_points(truth_path, vs, shape_zyx)
    types = truth["type"].to_numpy() if "type" in truth.columns else None
    return score(zyx(picks), zyx(truth), shape_zyx, threshold_vox(threshold_A, voxel_size), types, region=region)


def find_truth(truth, name: str):
    """The truth file of tomogram ``name``: ``truth`` itself if a file, else NAME_truth.csv/.ndjson or NAME.csv in it."""
    from pathlib import Path

    from .errors import PicketError

    truth = Path(truth)
    if truth.is_file():
        return truth
    for cand in (f"{name}_truth.csv", f"{name}_truth.ndjson", f"{name}.csv", f"{name}.ndjson"):
        if (truth / cand).is_file():
            return truth / cand
    raise PicketError(truth, f"holds no truth for tomogram {name!r}", f"name it {name}_truth.csv (x, y, z voxels[, type]) or give the file")


def evaluate_run(results_dir, truth, threshold_A: float = 100.0, region_bounds=None) -> pd.DataFrame:
    """Scores of every workflow of every tomogram under a run's output folder (one row each); ``region_bounds``
    (Z0 Z1 Y0 Y1 X0 X1 voxels): the box of each tomogram whose truth is complete (``Region``)."""
    from .errors import PicketError
    from .io.results import read_run, run_folders

    folders = run_folders(results_dir)  # one tomogram's folder (OUT/NAME) is a run folder of one
    if not folders:
        raise PicketError(results_dir, "holds no run.json", "give the --out folder of `picket-dask run` or one tomogram's folder in it")
    rows = []
    for folder in folders:
        doc = read_run(folder)  # picks paths resolved against the tomogram's folder
        tfile = find_truth(truth, doc["name"])
        region = None if region_bounds is None else Region.from_bounds(region_bounds, doc["shape_zyx"])
        for wf, paths in doc["picks"].items():
            s = evaluate_files(paths["csv"], tfile, doc["shape_zyx"], doc["voxel_size_A"], threshold_A, region)
            rows.append({"tomogram": doc["name"], "workflow": wf,
                         **{k: v for k, v in s.as_dict().items() if k != "recall_by_type"},
                         **{f"recall[{k}]": v for k, v in s.recall_by_type.items()}})
    return pd.DataFrame(rows)


def pr_curve(picks_zyx: np.ndarray, scores: np.ndarray, truth_zyx: np.ndarray, thr_vox: float,
             region: Region | None = None, shape_zyx=None) -> pd.DataFrame:
    """Precision and recall of the best-k picks by score, for every k (one row per cut).

    Columns: k, score (the k-th best score, the threshold), precision, recall, f1. Recall counts
    each truth once, when the first pick within ``thr_vox`` of it enters the list. ``region``: as ``score``
    (precision over the picks scored there, recall over the particles scored there; k counts all picks).
    """
    picks = np.asarray(picks_zyx, float).reshape(-1, 3)
    truth = np.asarray(truth_zyx, float).reshape(-1, 3)
    if len(picks) == 0:
        from .errors import PicketError

        raise PicketError("picks", "are empty: no precision-recall curve", "run with a wider size prior or lower --min-score")
    pe, tr, te, _ = scored_masks(region, picks, truth, thr_vox, shape_zyx)
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    picks, scores, pe = picks[order], np.asarray(scores, float)[order], pe[order]
    near = cKDTree(truth).query_ball_point(picks, thr_vox + 1e-9) if len(truth) else [[] for _ in picks]
    seen = np.zeros(len(truth), bool)
    tp = np.zeros(len(picks))
    found = np.zeros(len(picks))
    n_found = 0
    for i, idx in enumerate(near):
        tp[i] = pe[i] and any(tr[j] for j in idx)
        new = [j for j in idx if not seen[j] and te[j]]
        seen[new] = True
        n_found += len(new)
        found[i] = n_found
    k = np.arange(1, len(picks) + 1)
    scored = np.cumsum(pe)
    precision = np.cumsum(tp) / np.maximum(scored, 1)
    recall = found / max(int(te.sum()), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    rows = pd.DataFrame({"k": k, "score": scores, "precision": precision, "recall": recall, "f1": f1})
    return rows[scored > 0].reset_index(drop=True)  # no precision before the first scored pick


def plot_pr(curves: dict[str, pd.DataFrame], png, title: str = "precision-recall by score"):
    """Precision-recall curves (one per label) with the best-F1 cut marked; PNG."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for name, c in curves.items():
        best = c.f1.idxmax()
        ax.plot(c.recall, c.precision, label=f"{name} (best F1 {c.f1[best]:.2f} at score {c.score[best]:.2f}, {int(c.k[best])} picks)")
        ax.scatter([c.recall[best]], [c.precision[best]], s=25)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return Path(png)


def plot_scores(table: pd.DataFrame, png, metric: str = "f1"):
    """Box plot of ``metric`` per workflow across tomograms (PNG)."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io.atomic import ensure_parent

    order = table.groupby("workflow")[metric].median().sort_values(ascending=False).index.tolist()
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(order) + 2), 4.5))
    ax.boxplot([table.loc[table.workflow == w, metric].to_numpy() for w in order], showmeans=True)
    for i, w in enumerate(order, 1):
        v = table.loc[table.workflow == w, metric].to_numpy()
        ax.scatter(np.full(len(v), i) + np.linspace(-0.08, 0.08, len(v)), v, s=12, alpha=0.7)
    ax.set_xticks(range(1, len(order) + 1), order, rotation=45, ha="right")
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{metric} per workflow ({table.tomogram.nunique()} tomograms)")
    fig.tight_layout()
    fig.savefig(ensure_parent(png), dpi=90)
    plt.close(fig)
    return Path(png)
