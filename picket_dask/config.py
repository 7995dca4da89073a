"""Parameters of the two steps and of a run; YAML in and out; the reference's s1/s2 YAML accepted.

Units: voxel counts say ``_vox``; z bounds are slice indices (0-based, [lower, upper)).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import PicketError

FEATURES = ("intensities", "ffts", "gabor")
CLUSTERERS = ("kmeans", "gmm")
EXTRACTORS = ("cc", "ws")
ALL_WORKFLOWS = tuple(f"{f}-{c}-{e}" for f in FEATURES for c in CLUSTERERS for e in EXTRACTORS)
# The best mean F1 over the dev set's sparse and crowded tomograms without dust (benchmarks/devset_accuracy.py,
# README "Accuracy on realistic tomograms"); both share one segmentation. The paper's pair was
# gabor-gmm-cc + gabor-kmeans-ws: k-means splits the ice's own noise in two when particles are sparse.
DEFAULT_WORKFLOWS = ("gabor-gmm-ws", "gabor-gmm-cc")
# Particle-size prior: ~60 A is the equivalent-sphere diameter of a ~100 kDa protein (protein
# density 1.21 A^3/Da), about the smallest complex cryo-ET resolves in a tomogram; 400 A spans
# the largest common soluble assemblies (ribosomes ~250-300 A, 26S proteasomes ~450 A long are
# reached through the 1.5x tolerance). Membranes, filaments and contamination exceed it.
DEFAULT_DIAMETER_A = (60.0, 400.0)
# The blur matched to the smallest particle (segment/preprocess.blur_sigma_vox) stays where it still smooths
# (below ~1 voxel a Gaussian hardly averages neighbours) and where the 5x5x5 neighbourhood still sees structure
# (a blur wider than its half-width x 2 flattens it); voxels too coarse for the lower end are resampled (io/grid.py)
SIGMA_RANGE_VOX = (1.0, 4.0)
# Extreme density (gold): further from the ice median than this x the 99th percentile of |density - median|
# inside the sample; the densest proteins (ribosomes) stay below ~3x, gold beads reach 7-10x; the 99th
# percentile is not moved by gold unless it fills 1 % of the sample (localize/context.py, segment/extreme_class.py)
EXTREME_FACTOR = 4.0
EXTREME_MARGIN_A = 60.0  # extreme voxels grown by this much: a bead's blurred rim and its back-projection streaks
PRESETS = ("default", "reference")
# What ``preset: reference`` sets (each key still yields to an explicit value): PickET as published.
REFERENCE_SEGMENT = {"sigma_vox": 2.0, "resample": "off", "lamella": "off", "nodata": "off", "extreme_refit": "off", "orientation": "size", "denoise": "none", "background": "off", "kmeans_cut": "midpoint",
                     "gmm_starts": "kmeans", "fit_schedule": "exact"}
REFERENCE_MIN_DISTANCE_VOX = 15  # the reference's watershed peak spacing
REFERENCE_LOCALIZE = {"particle_diameter_A": None, "min_distance_vox": REFERENCE_MIN_DISTANCE_VOX, "context": "off", "shells": "off", "merge_close": "off", "face_layer": "off", "min_score": None,
                      "max_picks": None, "fdr": None}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _yaml_switches(cls, data):
        """An auto|off switch written unquoted in YAML (``context: off``) arrives as a boolean (YAML 1.1 reads
        off/no/false as False, on/yes/true as True): take False as "off" and True as "auto"."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name)
            if isinstance(value, bool) and field is not None and {"auto", "off"} <= set(get_args(field.annotation)):
                out[name] = "auto" if value else "off"
        return out


def z_bounds_checked(v, name: str, upper_included: bool):
    """(lower, upper) z slices, either None: not negative, and lower below upper ([lower, upper) when the
    upper slice is excluded, [lower, upper] when included). The volume's own extent is checked per tomogram."""
    if v is None:
        return v
    lo, hi = v
    if (lo is not None and lo < 0) or (hi is not None and hi < 0):
        raise ValueError(f"{name} {tuple(v)}: slices are counted from 0")
    if lo is not None and hi is not None and (hi < lo or (hi == lo and not upper_included)):
        span = "[lower, upper]" if upper_included else "[lower, upper)"
        raise ValueError(f"{name} {tuple(v)}: the lower slice must come before the upper one (slices {span})")
    return v


class SegmentParams(_Strict):
    """Step 1 (semantic segmentation)."""

    sigma_vox: Optional[float] = Field(
        None, gt=0, description="Gaussian blur sigma, voxels (None, the default: matched to the smallest particle of "
        "the size prior, its radius / sqrt(3) over the voxel size, clipped to 1-4 voxels (segment/preprocess."
        "blur_sigma_vox; 1.73 for 60 A at 10 A voxels); 2 without a prior and in the reference)")
    neighborhood_size: int = Field(5, description="neighborhood edge, voxels (only 5 is supported)")
    resample: Literal["auto", "off"] = Field(
        "auto", description="auto: a tomogram whose voxels are coarser than 6 per smallest particle diameter of the size "
        "prior (10 A for 60 A; 5 % tolerance) is picked on that grid (cubic spline; picks still in the tomogram's voxels; "
        "io/grid.py); off: the tomogram's own grid (the reference)")
    z_fit: Optional[tuple[Optional[int], Optional[int]]] = Field(None, description="fitting slab [lower, upper) slices")
    max_fit_voxels: Optional[int] = Field(
        500_000, gt=0, description="fitting sample size cap (None: whole slab). 500k: on the dev set its labels agree "
        ">= 99.5 % with a 1M fit's on every segmentation, as closely as two 1M fits of different seeds agree (README)")
    seed: int = Field(42, description="seed of the fitting sample and of the clusterers (random_state)")
    num_sinusoids: int = Field(10, ge=2, description="Gabor frequencies per axis")
    num_gabor_features: int = Field(64, ge=1, description="Gabor filters kept (largest response std)")
    kmeans_backend: Literal["sklearn", "dask-ml"] = "sklearn"
    kmeans_cut: Literal["mixture", "mirror", "midpoint"] = Field(
        "mixture", description="k-means boundary: mixture (default): moved along the k-means axis to where a 1-D "
        "two-Gaussian mixture of the sample's projections cuts, when that point lies inside the smaller k-means "
        "cluster (part of it is noise); mirror: to where the particle side holds twice the noise mirrored about "
        "the projections' mode (kmeans_cut.mirror_cut); midpoint: the k-means boundary (the reference)")
    gmm_starts: Literal["kmeans+tail", "kmeans"] = Field(
        "kmeans+tail", description="where each Gaussian mixture's EM starts: kmeans+tail (default): from k-means' labels "
        "and from the sample's outer 3 % (farthest from its mean, Mahalanobis); the fit with the higher likelihood is "
        "kept (clustering.tail_labels); kmeans: k-means' labels only (the reference)")
    fit_schedule: Literal["coarse-to-fine", "exact"] = Field(
        "coarse-to-fine", description="coarse-to-fine (default): each Gaussian mixture is fitted on every 8th sample "
        "row first and that fit starts the EM on the whole sample (same stop rule, 2-7 full passes instead of 6-17; "
        "labels agree >= 99.8 % with exact on the dev set, README); exact: scikit-learn's fit on the whole sample "
        "(the reference). k-means is always exact")
    device: Literal["cpu", "gpu"] = Field("cpu", description="gpu: chunks become cupy arrays on CUDA workers")
    lamella: Literal["auto", "off"] = Field(
        "auto", description="auto: find the ice slab (two fitted surfaces) and fit, orient and extract inside it "
        "(z_fit / z_extract override it); off: the whole box (the reference)")
    nodata: Literal["auto", "off"] = Field(
        "auto", description="auto: voxels where the tomogram is a constant fill (constant over the 5x5x5 cube: zero "
        "padding, NaNs replaced by the mean), grown by 2 + 3 blur sigmas, are left unassigned (label 255): not "
        "sampled, counted or picked (segment/nodata.py); off: every voxel is labelled (the reference)")
    extreme_refit: Literal["auto", "off"] = Field(
        "auto", description="auto: a model whose smaller (particle) cluster is mostly extreme density (gold) on the "
        "fit sample is fitted again without those rows (segment/extreme_class.py); off: kept (the reference)")
    lamella_margin: float = Field(0.1, ge=0, le=1, description="extraction reaches this share of the ice thickness beyond each found surface")
    background: Literal["auto", "off"] = Field(
        "auto", description="auto: subtract the tomogram's local mean at sigma = the size prior's largest diameter "
        "(400 A by default) before the blur: density gradients across the field (a lamella's thickness, a carbon film, "
        "uneven illumination) are not what the clusters split (segment/background.py); off: the tomogram as given "
        "(the reference)")
    background_sigma_vox: Optional[float] = Field(
        None, gt=0, description="sigma of that local mean, voxels (None: the size prior's largest diameter / voxel size)")
    denoise: Literal["none", "diffusion"] = Field(
        "none", description="edge-preserving denoising before the blur: diffusion (regularized Perona-Malik, "
        "scale from the data, segment/denoise.py); none: no denoising (the default: on the dev set it helped the "
        "sparse tomogram only, README; the reference)")
    orientation: Literal["size", "invert", "auto"] = Field(
        "size", description="size: larger cluster is background (the reference); invert: the opposite; "
        "auto: the cluster that forms compact particle-sized blobs")

    @field_validator("z_fit")
    @classmethod
    def _z_fit(cls, v):
        return z_bounds_checked(v, "z_fit", upper_included=False)

    @field_validator("neighborhood_size")
    @classmethod
    def _five(cls, v: int) -> int:
        if v != 5:
            raise ValueError("only neighborhood_size 5 is supported (the method's 5x5x5 neighborhoods)")
        return v


class LocalizeParams(_Strict):
    """Step 2 (instances and centroids)."""

    z_extract: Optional[tuple[Optional[int], Optional[int]]] = Field(None, description="keep mask in z slices [lower, upper]")
    min_distance_vox: Optional[int] = Field(
        None, ge=1, description="watershed: min distance between distance-map peaks, voxels (None: the size prior's "
        "smallest diameter in voxels, or the reference's 15 without a prior)")
    exclude_border: bool = Field(False, description="watershed: drop peaks within min_distance of a face (skimage default)")
    min_size_vox: int = Field(0, ge=0, description="drop instances smaller than this (0: keep all, the reference)")
    max_size_vox: Optional[int] = Field(None, ge=1, description="drop instances larger than this (None: keep all)")
    halo_vox: Optional[int] = Field(None, ge=1, description="watershed halo per chunk face (default 2*min_distance+2)")
    particle_diameter_A: Optional[tuple[float, float]] = Field(
        DEFAULT_DIAMETER_A, description="particle-size prior, Angstrom (min, max): instances whose equivalent-sphere "
        "diameter or longest extent falls outside [min/4, 1.5 max] are dropped (None: no prior, the reference)")
    context: Literal["auto", "off"] = Field(
        "auto", description="auto: mask gold/extreme density and membranes before instances; off: the reference")
    shells: Literal["auto", "off"] = Field(
        "auto", description="auto: a hollow particle's wall picks become one pick at its centre (localize/shells.py; "
        "needs the size prior); off: the reference")
    merge_close: Literal["auto", "wide", "off"] = Field(
        "auto", description="auto: picks closer than the smallest particle's diameter (the size prior) are one particle "
        "and become one pick (localize/duplicates.py); wide: also picks closer than the sum of their instances' "
        "equivalent-sphere radii (one pick per large particle, for averaging); off: keep them apart (the reference)")
    face_layer: Literal["auto", "off"] = Field(
        "auto", description="auto: drop instances on the first labelled layer at the volume's faces (the blur folds the "
        "noise back at a face and raises its variance there: a row of false picks along the faces; localize/faces.py); "
        "off: keep them (the reference)")
    drop_face_touching: bool = Field(False, description="drop instances touching the x/y faces (cut particles, "
                                     "reconstruction edge artefacts); False: keep them (the reference)")
    min_score: Optional[float] = Field(None, description="drop picks scoring below this (score: particle contrast in noise SDs)")
    max_picks: Optional[int] = Field(None, ge=1, description="keep at most this many picks, best scores first")
    fdr: Optional[float] = Field(None, gt=0, lt=1, description="keep the picks whose score is significant against "
                                 "an empirical null of the background (balls at random background positions), "
                                 "Benjamini-Hochberg at this false-discovery rate (localize/significance.py); None: off")
    fdr_null_size: int = Field(10000, ge=100, description="null balls drawn per ball size for --fdr")
    fdr_seed: int = Field(42, description="seed of the null balls' positions for --fdr")

    @field_validator("z_extract")
    @classmethod
    def _z_extract(cls, v):
        return z_bounds_checked(v, "z_extract", upper_included=True)

    @field_validator("particle_diameter_A")
    @classmethod
    def _range(cls, v):
        if v is not None and not (0 < v[0] < v[1]):
            raise ValueError(f"particle diameter range {tuple(v)} must be 0 < MIN < MAX Angstrom")
        return v


class RunConfig(_Strict):
    """A run: tomograms x workflows, and where the results go."""

    preset: Literal["default", "reference"] = Field(
        "default", description="default: the most accurate settings measured (working grid, lamella, context masks, size prior); "
        "reference: PickET exactly as published (explicit keys still win)")
    tomograms: list[str] = Field(default_factory=list)
    out: str = "picket-out"
    workflows: list[str] = Field(default_factory=lambda: list(DEFAULT_WORKFLOWS))
    segment: SegmentParams = Field(default_factory=SegmentParams)
    localize: LocalizeParams = Field(default_factory=LocalizeParams)
    chunks: int = Field(128, ge=16)
    voxel_size: Optional[float] = Field(None, gt=0, description="override the header's voxel size, Angstrom")
    dataset_name: Optional[str] = None
    copick_object: str = Field("particle", description="copick pickable object the picks are stored as")
    copick_user: str = Field("picket", description="copick user_id of picks and segmentations")
    concurrent: int = Field(2, ge=1, description="tomograms processed at the same time on the cluster")
    fit_on: int = Field(0, ge=0, description="fit each clusterer once on the first N tomograms and apply it to all (0: per tomogram)")
    classify: bool = Field(False, description="sort each workflow's picks into classes as the last stage (NAME/classes/WF)")
    relion_tomo_name: Optional[str] = Field(None, description="regular expression with one group matching each tomogram's "
                                            "whole name: the STAR files' rlnTomoName is that group (e.g. 'rec_(.*)'); None: the name")
    collect: bool = Field(True, description="at the end, gather every tomogram's picks in out into OUT/WF.star, OUT/WF.csv "
                          "and OUT/summary.csv (collect.py); False leaves it to `picket-dask collect` (arrays of thousands of tasks)")
    mask: Optional[str] = Field(None, description="picks only where this mask of the tomogram is nonzero at their centre: "
                                "an MRC/OME-Zarr file of the tomogram's shape, a folder of NAME_mask.mrc per tomogram, or "
                                "copick:NAME[:USER[:SESSION]], each copick run's segmentation NAME (io/roi.py)")
    exclude: Optional[str] = Field(None, description="picks dropped where this mask is nonzero at their centre (membranes, "
                                   "carbon, contamination segmented by another tool): as mask, folders of NAME_exclude.mrc")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, d):
        """``preset: reference`` fills the reference's values for every key not given explicitly."""
        if not isinstance(d, dict) or d.get("preset") != "reference":
            return d
        d = dict(d)
        for key, ref in zip(("segment", "localize"), preset_values("reference")):
            given = d.get(key) or {}
            given = given.model_dump(exclude_unset=True) if isinstance(given, BaseModel) else dict(given)
            d[key] = (SegmentParams if key == "segment" else LocalizeParams)(**{**ref, **given})
        return d

    @field_validator("workflows")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for w in v:
            if w == "all":
                out.extend(ALL_WORKFLOWS)
            elif w in ALL_WORKFLOWS:
                out.append(w)
            else:
                raise ValueError(f"unknown workflow {w!r}: use FEATURES-CLUSTERER-EXTRACTOR from {', '.join(ALL_WORKFLOWS)} or 'all'")
        return list(dict.fromkeys(out))


def preset_values(preset: str) -> tuple[dict, dict]:
    """(segment, localize) values a preset sets; ``default`` sets nothing (the field defaults are it)."""
    if preset == "reference":
        return dict(REFERENCE_SEGMENT), dict(REFERENCE_LOCALIZE)
    return {}, {}


# --- the reference implementation's parameter files ---------------------------------------------

_REF_S1 = {"dataset_name", "experiment_name", "run_name", "inputs", "neighborhood_size", "window_size",
           "max_num_neighborhoods_for_fitting", "feature_extraction_params", "clustering_methods", "output_dir"}
_REF_S2 = {"dataset_name", "experiment_name", "run_name", "inputs", "clustering_method", "particle_extraction_params",
           "output_dir", "particle_cluster_id"}
_FEATURE_KEYS = {"mode", "device", "num_windows_subsets", "num_sinusoids", "num_parallel_filters",
                 "num_output_features", "n_fft_subsets", "use_subset_size"}
_EXTRACT_MODES = {"connected_component_labeling": "cc", "cc": "cc", "watershed_segmentation": "ws", "ws": "ws"}


def _is_reference(d: dict) -> bool:
    return any(k in d for k in ("inputs", "feature_extraction_params", "clustering_methods", "particle_extraction_params"))


def from_reference(d: dict, source: object = "config") -> RunConfig:
    """Map the reference's s1 and/or s2 YAML (merged into one mapping) onto a RunConfig."""
    unknown = set(d) - _REF_S1 - _REF_S2
    if unknown:
        raise PicketError(source, f"unknown key(s) {sorted(unknown)} for a PickET parameter file", f"use only {sorted(_REF_S1 | _REF_S2)}")
    seg: dict = {}
    tomos: list[str] = []
    z_fit: set = set()
    for item in d.get("inputs") or []:
        if not isinstance(item, dict) or not ("tomogram" in item or "segmentation" in item):
            raise PicketError(source, f"input {item!r} has no 'tomogram' key", "write inputs as [{tomogram: path.mrc, lower_z-slice_limit: .., upper_z-slice_limit: ..}]")
        if "tomogram" in item:
            tomos.append(str(item["tomogram"]))
        lo, hi = item.get("lower_z-slice_limit"), item.get("upper_z-slice_limit")
        z_fit.add((None if lo in (None, "None") else int(lo), None if hi in (None, "None") else int(hi)))
    if len(z_fit) > 1:
        raise PicketError(source, "inputs have different z-slice limits", "run tomograms with different slab bounds in separate runs")
    if z_fit and z_fit != {(None, None)}:
        seg["z_fit"] = z_fit.pop()
    n = d.get("neighborhood_size", d.get("window_size"))
    if n is not None:
        seg["neighborhood_size"] = int(n)
    if "max_num_neighborhoods_for_fitting" in d:
        v = d["max_num_neighborhoods_for_fitting"]
        seg["max_fit_voxels"] = None if v in (None, "None") else int(v)
    fparams = d.get("feature_extraction_params") or {}
    if isinstance(fparams, dict):
        fparams = [fparams]
    modes = []
    for fp in fparams:
        bad = set(fp) - _FEATURE_KEYS
        if bad:
            raise PicketError(source, f"unknown feature_extraction_params key(s) {sorted(bad)}", f"use only {sorted(_FEATURE_KEYS)}")
        if fp.get("mode") not in FEATURES:
            raise PicketError(source, f"feature mode {fp.get('mode')!r} is not supported", f"use one of {FEATURES}")
        modes.append(fp["mode"])
        if fp["mode"] == "gabor":
            seg["num_sinusoids"] = int(fp.get("num_sinusoids", 10))
            seg["num_gabor_features"] = int(fp.get("num_output_features", 64))
    clusterers = d.get("clustering_methods") or ([d["clustering_method"]] if "clustering_method" in d else list(CLUSTERERS))
    for c in clusterers:
        if c not in CLUSTERERS:
            raise PicketError(source, f"clustering method {c!r} is not supported", f"use one of {CLUSTERERS}")
    loc: dict = {}
    extractors = []
    for pe in d.get("particle_extraction_params") or [{"mode": "connected_component_labeling"}, {"mode": "watershed_segmentation"}]:
        mode = _EXTRACT_MODES.get(pe.get("mode"))
        if mode is None:
            raise PicketError(source, f"particle extraction mode {pe.get('mode')!r} is not supported", f"use one of {sorted(_EXTRACT_MODES)}")
        extractors.append(mode)
        if mode == "ws" and "min_distance" in pe:
            if "min_distance_vox" in loc and loc["min_distance_vox"] != int(pe["min_distance"]):
                raise PicketError(source, "two watershed min_distance values", "give one watershed entry")
            loc["min_distance_vox"] = int(pe["min_distance"])
    workflows = [f"{f}-{c}-{e}" for f in (modes or ["gabor"]) for c in clusterers for e in extractors]
    try:
        return RunConfig(tomograms=tomos, out=str(d.get("output_dir", "picket-out")), workflows=workflows,
                         segment=SegmentParams(**seg), localize=LocalizeParams(**loc),
                         dataset_name=d.get("dataset_name") or d.get("experiment_name"))
    except ValidationError as exc:
        raise PicketError(source, _first_error(exc), "fix that value in the parameter file") from None


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    return f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"


def load_config(path: str | Path) -> RunConfig:
    """Read a run YAML: picket-dask's own keys, or the reference's s1/s2 keys (one file or merged)."""
    path = Path(path)
    try:
        d = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PicketError(path, f"cannot read YAML ({type(exc).__name__})", "give a readable YAML parameter file") from None
    if not isinstance(d, dict):
        raise PicketError(path, "YAML is not a mapping of keys to values", "write one key: value per line")
    if _is_reference(d):
        return from_reference(d, path)
    try:
        return RunConfig(**d)
    except ValidationError as exc:
        raise PicketError(path, _first_error(exc), "fix that key (see `picket-dask run --help`)") from None


def dump_config(cfg: RunConfig) -> str:
    """YAML text of a RunConfig (round-trips through load_config)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
