"""A run's inputs checked before any work: the tomograms named (files, folders, URLs, copick runs), each
opened by its header and checked against the options (size prior, z bounds, masks), the user's regions
(``--mask``, ``--exclude``) loaded per tomogram, and ``--dry-run``'s plan. The CLI calls ``checked_inputs``
before a cluster starts, so a bad input among many is one line before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import DEFAULT_DIAMETER_A, RunConfig
from .errors import PicketError
from .io.copick_io import is_copick
from .io.grid import Grid, working_grid
from .io.omezarr import is_url
from .io.picks import relion_name
from .io.results import RUN_JSON
from .io.roi import load_mask, voxels_inside
from .io.tomogram import is_zarr, open_tomogram, source_id, tomogram_name
from .provenance import Timings


def user_mask(path, cfg: RunConfig, timings: Timings, option: str = "--mask") -> tuple:
    """``--mask`` (where picks may be) or ``--exclude`` (where they may not): the tomogram's mask (io/roi.py's
    RegionMask) and the run.json record, or (None, None). A ``--mask`` without a nonzero voxel is refused here,
    before the tomogram is converted; an empty ``--exclude`` excludes nothing (a tomogram of a batch without
    membranes has an empty membrane segmentation)."""
    spec = cfg.mask if option == "--mask" else cfg.exclude
    if not spec:
        return None, None
    with timings.stage(option.lstrip("-")):
        t = open_tomogram(path, cfg.chunks, cfg.voxel_size)
        mask = load_mask(spec, path, tomogram_name(path), t.shape, t.voxel_size[0], cfg.chunks, option)
        n = voxels_inside(mask.data)
    if n == 0 and option == "--mask":
        raise PicketError(f"--mask {mask.source}", "has no nonzero voxel: every pick would be dropped",
                          "give a mask that is nonzero where picks may be (or leave --mask out)")
    own = {} if mask.voxel_size_A is None else {"voxel_size_A": mask.voxel_size_A, "shape_zyx": list(mask.data.shape)}
    rule = "picks kept where the mask is nonzero at their centre" if option == "--mask" else \
        "picks dropped where the mask is nonzero at their centre"
    return mask, {"path": mask.source, **own, "voxels_inside": n, "fraction": round(n / float(np.prod(mask.data.shape)), 6),
                  "rule": rule}


def region_rule(mask, exclude, grid: Grid):
    """localize's ``roi`` (centres on the working grid -> bool) from ``--mask`` and ``--exclude`` (RegionMasks or
    None), or None when neither is given: inside the mask and not inside the exclusion."""
    if mask is None and exclude is None:
        return None

    def roi(c: np.ndarray) -> np.ndarray:
        src = grid.to_source(c)  # working -> tomogram voxels
        keep = np.ones(len(src), bool) if mask is None else mask.inside(src)
        return keep if exclude is None else keep & ~exclude.inside(src)
    return roi


def checked_inputs(tomograms, cfg: RunConfig) -> list:
    """The tomograms (files, folders, copick specs) as a list of inputs, each opened (its header: no data read)
    and checked against the options (size prior, z bounds), so that a bad input among many fails before any
    work, and before a cluster starts (the CLI calls this first)."""
    paths = [_copick_checked(p, cfg) if is_copick(p) else p
             for p in expand_inputs([tomograms] if isinstance(tomograms, (str, Path)) else tomograms)]
    for p in paths:
        t = open_tomogram(p, cfg.chunks, cfg.voxel_size)
        check_diameter_fits(p, t, cfg)
        check_z_bounds(p, t, cfg)
        relion_name(tomogram_name(p), cfg.relion_tomo_name)  # the pattern names every tomogram
        for option, spec in (("--mask", cfg.mask), ("--exclude", cfg.exclude)):
            if spec:  # found and of the tomogram's extent (its voxels are counted when the tomogram's turn comes)
                load_mask(spec, p, tomogram_name(p), t.shape, t.voxel_size[0], cfg.chunks, option)
    return paths


def plan(paths: list, cfg: RunConfig, out: str | Path) -> list[dict]:
    """What ``run`` would do with each checked input (``checked_inputs``), read from headers only: its name
    and OUT/NAME, shape (z, y, x), voxel size (Angstrom; the header's or --voxel-size), the working grid,
    its mask, and whether OUT/NAME holds an earlier run (resumed: stages whose parameters match are kept).
    ``picket-dask run --dry-run`` prints it before a batch is submitted."""
    rows = []
    for p in paths:
        t = open_tomogram(p, cfg.chunks, cfg.voxel_size)
        grid = working_grid(t.voxel_size, t.shape, cfg.localize.particle_diameter_A, cfg.segment.resample)
        name = tomogram_name(p)
        folder = Path(out) / name
        state = "holds an earlier run (its stages whose parameters match are kept)" if (folder / RUN_JSON).is_file() else \
            "folder exists, no run.json: run again from the start" if folder.exists() else "new"
        rows.append({"name": name, "input": source_id(p), "shape_zyx": t.shape, "voxel_size_A": t.voxel_size[0],
                     "voxel_size_from": "--voxel-size" if cfg.voxel_size is not None else "header",
                     "grid": grid.reason if grid.resampled else "the tomogram's own",
                     "work_voxels": int(np.prod(grid.shape)),
                     "mask": load_mask(cfg.mask, p, name, t.shape, t.voxel_size[0], cfg.chunks).source if cfg.mask else "",
                     "exclude": load_mask(cfg.exclude, p, name, t.shape, t.voxel_size[0], cfg.chunks, "--exclude").source
                     if cfg.exclude else "",
                     "out": str(folder), "state": state,
                     "note": "voxel size <= 1 A: unset in the header? pass --voxel-size"
                     if cfg.voxel_size is None and max(t.voxel_size) <= 1.0 else ""})
    return rows


def distinct_inputs(paths: list) -> list:
    """``paths`` with an input given twice kept once, and refused when two inputs share a name: each writes
    OUT/NAME (NAME: the file name without its suffix, a copick run's name), so ``TS_01/tomo.mrc`` and
    ``TS_02/tomo.mrc``, or ``a.mrc`` and ``a.rec``, would write one folder (the second run's results over the
    first's, or one stopping at the other's lock)."""
    by_name: dict[str, object] = {}
    seen: set[str] = set()
    out = []
    for p in paths:
        sid = source_id(p)
        if sid in seen:
            continue
        seen.add(sid)
        name = tomogram_name(p)
        if name in by_name:
            raise PicketError(f"{by_name[name]} and {p}", f"both write OUT/{name} (one name per tomogram)",
                              "rename or link one under another name, or run them with separate --out folders")
        by_name[name] = p
        out.append(p)
    return out


def _copick_checked(spec: str, cfg: RunConfig) -> str:
    """A copick input with its voxel spacing chosen (``copick_io.with_spacing``: for the size prior's working
    grid) and its pickable object checked, before any work."""
    from .io.copick_io import check_object, with_spacing
    from .io.grid import WORK_VOXELS_PER_DIAMETER
    from .progress import note

    if cfg.voxel_size is not None:  # a copick tomogram's voxel size is its spacing in the project (picks go back there)
        raise PicketError(f"--voxel-size {cfg.voxel_size:g}", f"does not apply to the copick input {spec} (its voxel spacing "
                          "is the project's)", "leave it out, or choose a spacing with --copick-voxel-spacing")
    target = (cfg.localize.particle_diameter_A or DEFAULT_DIAMETER_A)[0] / WORK_VOXELS_PER_DIAMETER  # the default prior's without one
    spec, said = with_spacing(spec, target)
    if said:
        note(said)
    check_object(spec, cfg.copick_object)
    return spec


def check_diameter_fits(path, tomo, cfg: RunConfig) -> None:
    """Refuse a size prior whose smallest diameter is longer than the tomogram's shortest side (shape x
    voxel size, Angstrom): no particle fits, and it is almost always a unit slip (nm or voxels for A)."""
    d = cfg.localize.particle_diameter_A
    if not d:
        return
    extent = min(n * v for n, v in zip(tomo.shape, tomo.voxel_size))
    if d[0] >= extent:
        v = max(tomo.voxel_size)
        unset = " (1 A is what MRC writers put when none was set)" if v <= 1.0 and cfg.voxel_size is None else ""
        raise PicketError(f"--particle-diameter-A {d[0]:g} {d[1]:g}", f"the smallest diameter is longer than {path}'s "
                          f"shortest side ({extent:.0f} A: {min(tomo.shape)} voxels of {v:g} A{unset})",
                          "give the diameters in Angstrom (e.g. 60 400), and --voxel-size A if the header's is wrong")


def check_z_bounds(path, tomo, cfg: RunConfig) -> None:
    """Refuse --z-extract slices past the tomogram's last one and a --z-fit that leaves no slice to fit on
    (a voxel's 5x5x5 neighbourhood needs two slices each side); the bounds' order is checked with the
    options (config.z_bounds_checked), the same rules again on the working grid (mask, neighborhoods)."""
    nz = int(tomo.shape[0])
    ze = cfg.localize.z_extract
    if ze is not None and any(b is not None and b > nz - 1 for b in ze):
        raise PicketError(f"--z-extract {ze[0]} {ze[1]}", f"reaches past {path}'s last slice ({nz - 1})",
                          f"give slices within 0..{nz - 1}")
    zf = cfg.segment.z_fit
    if zf is not None:
        from .segment.neighborhoods import HALF, interior_range

        lo, hi = interior_range(nz, zf)
        if hi <= lo:
            raise PicketError(f"--z-fit {zf[0]} {zf[1]}", f"leaves no slice of {path} to fit on ({nz} slices; a voxel's "
                              "5x5x5 neighbourhood needs two more on each side)", f"give slices within {HALF}..{nz - HALF}")


def expand_inputs(items) -> list:
    """Tomogram paths from files and folders (a folder: its .mrc/.rec/.map files and .zarr images; not the tilt
    series and stacks, .st/.ali/.mrcs, that an IMOD or Warp folder holds beside its tomograms under one name, nor
    the ``NAME_mask.*`` files ``--mask`` reads), each once and each with a name of its own (``distinct_inputs``:
    every input writes OUT/NAME)."""
    from .io.mrc import MRC_SUFFIXES, STACK_SUFFIXES

    out: list[Path] = []
    for item in items:
        if is_copick(item) or is_url(item):  # read as named (a URL is not a local path: Path would fold its //)
            out.append(item)
            continue
        p = Path(item)
        if p.is_dir() and not is_zarr(p):
            found = sorted(q for q in p.iterdir() if ((q.suffix.lower() in MRC_SUFFIXES and q.suffix.lower() not in STACK_SUFFIXES)
                           or (q.suffix == ".zarr" and q.is_dir())) and not tomogram_name(q).lower().endswith(("_mask", "_exclude")))
            if not found:
                raise PicketError(p, "folder holds no tomograms", "give MRC/REC files or .zarr images, or a folder of them")
            out.extend(found)
        else:
            out.append(p)
    if not out:
        raise PicketError("tomograms", "none given", "name at least one MRC/REC file or OME-Zarr image")
    return distinct_inputs(out)
