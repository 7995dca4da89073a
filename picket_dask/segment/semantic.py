"""Step 1 end to end: preprocess once, sample once, fit every requested model, label in one pass.

Several segmentations of one tomogram (feature mode x clusterer) share the preprocessing, the
fitting sample and, for the linear modes, the neighborhood matrix of every chunk: all models'
decision matrices are applied in one product per group of planes.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np

from ..backend import fits_on_device, gpu_memory_error, gpu_problem, to_host
from ..chunking import open_for_writing, value_counts
from ..config import DEFAULT_DIAMETER_A, EXTREME_MARGIN_A, SegmentParams
from ..errors import PicketError
from ..io.atomic import remove
from ..progress import compute, note
from ..provenance import Timings, environment
from .apply import BORDER, orient, semantic_labels, semantic_labels_from_store
from .clustering import FittedModel, fit, sample_labels
from .extreme_class import gold_rows, needs_refit, smaller_cluster
from .features import linear_operator, sample_features, select_gabor
from .fit_threads import limited_threads, one_blas_thread_per_task
from .lamella import Lamella, detect_lamella
from .neighborhoods import gather_neighborhoods, sample_voxels
from .nodata import find_no_data
from .orientation import choose_orientation
from .preprocess import preprocess, with_blur_scale

# No image-label "colors": napari warns for any colour table without a default entry, which NGFF
# cannot express (label-value must be an integer; napari-ome-zarr drops other entries). Labels show in
# napari's own label colours there; `picket-dask view` colours them (view.SEMANTIC_COLORMAP).


@dataclass
class Segmentation:
    """One semantic segmentation: its name, fitted model, orientation and where the labels are."""

    features: str
    clusterer: str
    model: FittedModel
    gabor_idx: list[int] | None = None
    flipped: bool = False
    counts: dict = field(default_factory=dict)
    orientation: dict = field(default_factory=dict)
    labels_path: Path | None = None
    lamella: Lamella | None = None

    @property
    def name(self) -> str:
        return f"{self.features}-{self.clusterer}"


@dataclass
class FitSample:
    """The fitting sample of one tomogram: voxel coordinates (z, y, x) and their neighborhoods."""

    coords: np.ndarray
    neighborhoods: np.ndarray


MIN_FIT_VOXELS = 10  # fewer sample voxels than this fit nothing meaningful (the mixtures' EM needs rows to split)


def draw_sample(scaled: da.Array, params: SegmentParams, stored: tuple[str, float, float] | None = None,
                lamella: Lamella | None = None, no_data: da.Array | None = None, source: object = "tomogram") -> FitSample:
    """Random interior voxels of the fitting slab and their (n, 125) float32 neighborhoods
    (``stored``: the blurred volume's store, min and max, read directly by each task).

    With a found ``lamella`` (and no user z_fit) the voxels are drawn inside the ice slab only;
    the voxels of ``no_data`` (boolean, z, y, x: segment/nodata.py) are dropped from the draw.
    Fewer than MIN_FIT_VOXELS voxels to draw from is a PicketError naming ``source``.
    """
    if lamella is None or not lamella.found or params.z_fit is not None:
        coords = sample_voxels(scaled.shape, params.z_fit, params.max_fit_voxels, params.seed)
    else:
        coords = sample_in_lamella(scaled.shape, lamella, params.max_fit_voxels, params.seed)
    if no_data is not None and len(coords):
        drop = compute(no_data.vindex[coords[:, 0], coords[:, 1], coords[:, 2]], label="fit sample: voxels with data")[0]
        coords = coords[~np.asarray(drop, bool)]
    if len(coords) < MIN_FIT_VOXELS:
        raise PicketError(source, f"leaves {len(coords)} voxels to fit the clusterers on (interior voxels of the "
                          f"{'ice slab' if lamella is not None and lamella.found else 'fitting slab'} with data)",
                          "give a larger tomogram, wider --z-fit bounds or a larger --max-fit-voxels")
    return FitSample(coords, gather_neighborhoods(scaled, coords, stored=stored))


def sample_in_lamella(shape, lamella: Lamella, max_voxels: int | None, seed: int) -> np.ndarray:
    """Sorted (n, 3) (z, y, x) seeded uniform sample of interior voxels inside the slab."""
    zr = lamella.z_range()
    frac = max(lamella.fraction_inside() * shape[0] / max(1, zr[1] - zr[0]), 0.05)
    want = None if max_voxels is None else int(min(max_voxels / frac * 1.3 + 1000, 2**62))
    cand = sample_voxels(shape, zr, want, seed)
    cand = cand[lamella.inside_points(cand)]
    if max_voxels is not None and len(cand) > max_voxels:
        rng = np.random.default_rng(seed + 1)
        cand = cand[np.sort(rng.choice(len(cand), size=int(max_voxels), replace=False))]
    return cand


def fit_models(sample: FitSample, pairs: list[tuple[str, str]], params: SegmentParams,
               release: bool = False, voxel_A: float | None = None) -> list[Segmentation]:
    """Fit each (features, clusterer) pair on the sample; features computed from the sample only.

    One feature mode at a time: its float64 features are formed, every clusterer of that mode is
    fitted on them, and they are dropped. ``release``: the caller hands the sample over, and its
    neighborhoods are dropped as soon as the last mode's features exist (~0.5 GB at 1M voxels
    less during that fit). ``voxel_A``: the sample grid's voxel size, for the gold rows' margin
    (extreme_class.py; None: a pooled sample, the extreme rows alone).
    """
    # intensities (125 float64 features, the largest) last: the neighborhoods are gone by its fit
    modes = sorted(dict.fromkeys(mode for mode, _ in pairs), key=lambda m: m == "intensities")
    fitted: dict[tuple[str, str], Segmentation] = {}
    gold = None
    if params.extreme_refit == "auto" and sample.neighborhoods is not None:
        reach = 0.0 if voxel_A is None else EXTREME_MARGIN_A / float(voxel_A)
        gold = gold_rows(sample.neighborhoods, sample.coords, reach)
        gold = gold if gold.any() else None
    with limited_threads() as threads:  # BLAS/OpenMP threads = the cores idle now: no oversubscription
        for k, mode in enumerate(modes):
            gidx = select_gabor(sample.neighborhoods, params.num_gabor_features, params.num_sinusoids) if mode == "gabor" else None
            f = sample_features(mode, sample.neighborhoods, gidx, params.num_sinusoids, threads)
            if release and k == len(modes) - 1:
                sample.neighborhoods = None
            G = linear_operator(mode, gidx, num_sinusoids=params.num_sinusoids)
            space = "fft" if mode == "ffts" else "neighborhood"
            init = None  # k-means first: its fit is the mixture's k-means initialisation, not run twice
            for m, clusterer in sorted(pairs, key=lambda p: p[1] != "kmeans"):
                if m == mode:
                    model, init = _fit_checked(clusterer, f, None if mode == "intensities" else G, space, params, init,
                                               threads, gold)
                    _note_fit(f"{mode}-{clusterer}", model.params)
                    fitted[(m, clusterer)] = Segmentation(mode, clusterer, model, None if gidx is None else [int(i) for i in gidx])
            del f, init
    return [fitted[p] for p in pairs]


def _fit_checked(clusterer: str, f: np.ndarray, G, space: str, params: SegmentParams, init, threads: int,
                 gold: np.ndarray | None):
    """One clusterer fitted on the sample's features ``f``, fitted again without the ``gold`` rows when its
    smaller cluster is mostly those (extreme_class.py); returns the model and the k-means labels that
    initialise the mixture after it (``init`` passed on for a mixture; None when they cover fewer rows)."""
    def fit_on(rows, init_labels):
        return fit(clusterer, f if rows is None else f[rows], G, space, params.seed, params.kmeans_backend,
                   params.device, init_labels, params.kmeans_cut, params.fit_schedule, threads, params.gmm_starts)

    model = fit_on(None, init)
    refitted = False
    if gold is not None:
        small, rows = smaller_cluster(model, len(f))
        refitted, report = needs_refit(sample_labels(model, f[gold], space), small, rows)
        if refitted and int((~gold).sum()) < MIN_FIT_VOXELS:  # (a tiny volume) nothing but gold rows to refit on
            refitted, report["refit_skipped"] = False, f"{int((~gold).sum())} rows without gold: too few to fit"
        if refitted:  # the smaller cluster is the gold: fit again on the rest
            model = fit_on(~gold, None)
            report["refitted_without_gold_rows"] = True
        model.params["extreme_class"] = report
    # the next mixture starts from these k-means labels; a refit's cover fewer rows than the sample
    init = None if refitted else (model.labels if clusterer == "kmeans" else init)
    model.labels = None
    return model, init


def _note_fit(name: str, params: dict) -> None:
    """One console line when the fit took a turn a user should know of (the label metadata has the numbers)."""
    gold = params.get("extreme_class", {})
    if gold.get("refitted_without_gold_rows"):
        note(f"{name}: fitted again without the gold rows ({gold['smaller_cluster_gold_share']:.0%} of its smaller "
             "cluster were gold)")
    starts = params.get("starts", {})
    if starts.get("kept") == "tail":
        note(f"{name}: the mixture started from the sample's outer rows fits better than from k-means' labels "
             f"(log-likelihood {starts['tail_lower_bound'] - starts['kmeans_lower_bound']:+.3f} per row): kept")


def _model_meta(seg: Segmentation) -> dict:
    p = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in seg.model.params.items()}
    counts = {"sample_cluster_counts": seg.model.sample_counts} if seg.model.sample_counts else {}
    return {"method": seg.model.method, "fit_seconds": round(seg.model.fit_seconds, 3), "params": p, **counts,
            "gabor_filter_indices": seg.gabor_idx}


def on_device(data: da.Array, device: str) -> da.Array:
    """The tomogram with cupy chunks for device 'gpu' (checked to be usable), unchanged for 'cpu'."""
    if device != "gpu":
        return data
    problem = gpu_problem()
    if problem:
        raise PicketError("device gpu", problem, "pip install 'picket-dask[gpu]' on a machine with an NVIDIA GPU, or use the cpu device")
    import cupy

    return data.map_blocks(cupy.asarray, dtype=data.dtype, meta=cupy.empty((0, 0, 0), data.dtype))


def segment_tomogram(image_path: str | Path, data: da.Array, voxel_size: tuple[float, float, float],
                     pairs: list[tuple[str, str]], params: SegmentParams | None = None,
                     source: str | None = None, label_prefix: str = "semantic-",
                     models: list[Segmentation] | None = None, extra_meta: dict | None = None) -> tuple[list[Segmentation], Timings]:
    """Semantic labels for each (features, clusterer) pair, written as ``<image>/labels/semantic-<f>-<c>``.

    ``data`` is the raw tomogram (z, y, x); ``image_path`` the OME-Zarr image the labels go into.
    Pass ``models`` (fitted elsewhere, e.g. on other tomograms) to skip the fit.
    Labels: 0 background, 1 particle, 255 border (within 2 voxels of a face).
    """
    # a blur left to the size prior (sigma_vox None) follows the default prior here; runs pass their own
    params = with_blur_scale(params or SegmentParams(), DEFAULT_DIAMETER_A, voxel_size)
    timings = Timings()
    host = data  # the no-data rule reads the tomogram on the host (scipy's filters)
    data = on_device(data, params.device)
    scratch = Path(image_path) / f".preprocessed-{uuid.uuid4().hex[:8]}"
    try:
        return _segment(image_path, data, host, voxel_size, pairs, params, source, label_prefix, models, extra_meta, timings,
                        scratch)
    except Exception as exc:  # cupy out of memory on a chunk: one line naming the chunk size to lower
        oom = gpu_memory_error(exc, data.chunksize)
        if oom is None:
            raise
        raise oom from None
    finally:
        remove(scratch)


def _segment(image_path, data, host, voxel_size, pairs, params, source, label_prefix, models, extra_meta, timings, scratch):
    from ..io.omezarr import commit_labels, create_labels

    no_data, no_data_report = None, {"mode": params.nodata}
    if params.nodata == "auto":  # first: the background's local mean leaves the fill out
        with timings.stage("no_data"):
            no_data, no_data_report = find_no_data(host, params.sigma_vox, str(scratch / "no-data"))
    with timings.stage("preprocess"):
        # cupy chunks stay in device memory; beside the no-data mask's store in the same scratch folder
        store = None if params.device == "gpu" else scratch / "blurred"
        # GPU: the blurred volume stays resident when it takes at most a quarter of the free device memory
        # (float32: 0.5 GiB for 256x512x512), else each later stage blurs its chunks again
        keep = params.device == "gpu" and fits_on_device(int(np.prod(data.shape)) * 4)
        background = {"mode": params.background}
        scaled, lo, hi = preprocess(data, params.sigma_vox, source or image_path, store=store, keep=keep,
                                    denoise=params.denoise, report=background, exclude=no_data, host=host,
                                    background_sigma_vox=params.background_sigma_vox if params.background == "auto" else None)
    lamella = Lamella.whole_box(data.shape, "lamella detection off")
    if params.lamella == "auto":
        with timings.stage("lamella"):
            lamella = detect_lamella(scaled, margin=params.lamella_margin, sigma_vox=params.sigma_vox,
                                     neighborhood_size=params.neighborhood_size, no_data=no_data)
        if not lamella.found:
            note(f"lamella: {lamella.reason}")  # also in summary.csv and the end of run's noted rows (warn)
    if models is None:
        with timings.stage("sample"):
            sample = draw_sample(scaled, params, None if store is None else (str(store), lo, hi), lamella, no_data,
                                 source=source or image_path)
        with timings.stage("fit"):
            segs = fit_models(sample, pairs, params, release=True, voxel_A=float(np.max(voxel_size)))
        del sample  # the sample (~0.5 GB at 1M voxels) is not needed by the label pass
    else:
        segs = [Segmentation(s.features, s.clusterer, s.model, s.gabor_idx) for s in models]
    t0 = time.perf_counter()
    decisions = [s.model.decision for s in segs]
    if store is not None:  # each task reads its chunk + halo from the stored blur: bounded worker memory
        raw = semantic_labels_from_store(str(store), lo, hi, scaled.chunks, decisions)
    else:
        raw = semantic_labels(scaled, decisions)
    if params.device == "gpu":
        raw = raw.map_blocks(to_host, dtype=np.uint8, meta=np.empty((0, 0, 0, 0), np.uint8))
    if no_data is not None:  # unassigned like the faces' border: not counted, never a particle
        raw = da.where(no_data.rechunk(raw.chunks[1:])[None], np.uint8(BORDER), raw)
    tmps, stores, counts = [], [], []
    try:
        for i, s in enumerate(segs):
            tmp, target = create_labels(image_path, f"{label_prefix}{s.name}", data.shape, data.chunksize, np.uint8)
            tmps.append(tmp)
            stores.append(da.store(raw[i], target, lock=False, compute=False))
            # the orientation rule counts cluster sizes inside the sample only: vacuum is neither
            counts.append(value_counts(raw[i] if not lamella.found else
                                       da.where(lamella.mask(raw[i].chunks), raw[i], np.uint8(BORDER)), 2))
        with one_blas_thread_per_task():
            results = compute(*stores, *counts, label=f"features + labels: {', '.join(s.name for s in segs)}")
        timings["features_and_labels"] = round(time.perf_counter() - t0, 4)
        with timings.stage("orientation"):
            for s, tmp, c in zip(segs, tmps, results[len(segs):]):
                s.counts = {"cluster0": int(c[0]), "cluster1": int(c[1])}
                target = open_for_writing(tmp / "0")
                s.orientation = choose_orientation(da.from_zarr(target), s.counts, params.orientation)
                s.flipped = s.orientation["flip"]
                if s.flipped:
                    compute(da.store(orient(da.from_zarr(target), True), target, lock=False, compute=False),
                            label=f"orienting {s.name}")
        for s, tmp in zip(segs, tmps):
            meta = {"step": "semantic_segmentation", "input": source, "features": s.features, "clusterer": s.clusterer,
                    "params": params.model_dump(mode="json"), "scaling": {"min": lo, "max": hi},
                    "model": _model_meta(s), "cluster_counts": s.counts, "lamella": lamella.as_dict(), "no_data": no_data_report, "background": background,
                    "orientation": s.orientation,
                    "particle_cluster_id": 1, "labels": {"0": "background", "1": "particle", str(BORDER): "border (no neighborhood) or no data"},
                    "timings_s": dict(timings), **(extra_meta or {}), **environment()}
            s.labels_path = commit_labels(image_path, f"{label_prefix}{s.name}", tmp, voxel_size, meta)
    except BaseException:
        for tmp in tmps:
            remove(tmp)
        raise
    for s in segs:
        s.lamella = lamella
    return segs, timings
