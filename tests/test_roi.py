"""--mask: picks only where a user's mask of the tomogram is nonzero at their centre (io/roi.py)."""

import json
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

from picket_dask.cli import main
from picket_dask.io.roi import inside
from picket_dask.workflows import run

WF = "gabor-kmeans-cc"
KW = dict(chunks=32, max_fit_voxels=20_000)


def _write(path, data):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
    return path


def _picks(res):
    return pd.read_csv(res.picks[WF]["csv"], comment="#")


@pytest.mark.parametrize("voxel_size", [None, 14.0])  # 14 A: picked on a finer working grid, the mask read in the tomogram's voxels
def test_masked_picks_are_the_picks_inside(tmp_path, sim_tiny, voxel_size):
    shape = mrcfile.mmap(sim_tiny["tomogram"], mode="r").data.shape
    mask = np.zeros(shape, np.int16)
    mask[:, :60, :] = 7  # any nonzero value is inside
    mask[:, :, :10] = 0
    masks = tmp_path / "masks"
    masks.mkdir()
    _write(masks / f"{sim_tiny['tomogram'].stem}_mask.mrc", mask)
    free = run(sim_tiny["tomogram"], tmp_path / "free", [WF], voxel_size=voxel_size, **KW)[0]
    held = run(sim_tiny["tomogram"], tmp_path / "held", [WF], voxel_size=voxel_size, mask=str(masks), **KW)[0]
    a, b = _picks(free), _picks(held)
    z, y, x = (np.rint(a[c]).astype(int) for c in ("z", "y", "x"))
    expected = a[mask[z, y, x] != 0].reset_index(drop=True)
    assert 0 < len(b) == len(expected) < len(a)
    pd.testing.assert_frame_equal(b.drop(columns="id"), expected.drop(columns="id"))  # ids: 1..N of the kept
    if voxel_size is None:  # the same mask as napari saves a labels layer (a zlib-compressed TIFF stack)
        import tifffile

        tiff = tmp_path / "tiff"
        tiff.mkdir()
        tifffile.imwrite(tiff / f"{sim_tiny['tomogram'].stem}_mask.tif", mask.astype(np.uint8), compression="zlib")
        again = run(sim_tiny["tomogram"], tmp_path / "tif", [WF], mask=str(tiff), **KW)[0]
        pd.testing.assert_frame_equal(_picks(again), b)
    doc = json.loads(held.run_json.read_text())
    assert doc["mask"]["voxels_inside"] == int((mask != 0).sum()) and doc["mask"]["path"].endswith("_mask.mrc")
    assert doc["config"]["mask"] == str(masks)
    from picket_dask.view import layers

    shown = {kw["name"]: (d, kw) for d, kw, _ in layers(held.run_json.parent)}
    np.testing.assert_array_equal(np.asarray(shown["mask"][0]), mask != 0)  # napari shows it over the tomogram's voxels
    assert shown["mask"][1]["scale"] == tuple(doc["voxel_size_A"])


def test_inside_reads_the_nearest_voxel():
    import dask.array as da

    m = np.zeros((4, 5, 6), np.uint8)
    m[1, 2, 3] = 1
    pts = np.array([[1.2, 1.6, 3.4], [1, 2, 2.6], [0.4, 2, 3], [-1, 2, 3], [1, 2, 9], [3.9, 4.4, 5.4]])
    assert inside(da.from_array(m, chunks=2), pts).tolist() == [True, True, False, False, False, False]


def test_bad_masks_are_one_line_before_any_output(tmp_path, sim_tiny, capsys):
    shape = mrcfile.mmap(sim_tiny["tomogram"], mode="r").data.shape
    tomo, stem = str(sim_tiny["tomogram"]), sim_tiny["tomogram"].stem
    (tmp_path / "none").mkdir()
    cases = [(str(tmp_path / "missing.mrc"), "no such file or folder"),
             (str(tmp_path / "none"), f"holds no mask for tomogram {stem!r}"),
             (str(_write(tmp_path / "small.mrc", np.ones((4, 5, 6), np.uint8))), "has shape (4, 5, 6) (z, y, x), not the shape"),
             (str(_write(tmp_path / "empty.mrc", np.zeros(shape, np.uint8))), "has no nonzero voxel")]
    for i, (mask, words) in enumerate(cases):
        out = tmp_path / f"out{i}"
        code = main(["run", tomo, "--out", str(out), "--workflows", WF, "--mask", mask, "--cluster", "threads", "--chunks", "32"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and words in err[-1] and err[-1].startswith("picket-dask: error: --mask"), err
        assert not out.exists() or not any(out.iterdir()), list(out.rglob("*"))  # nothing half-written


def test_tiff_masks_read_as_stacks(tmp_path):
    import tifffile

    from picket_dask.errors import PicketError
    from picket_dask.io.roi import open_mask

    m = (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 3).astype(np.uint8)
    tifffile.imwrite(tmp_path / "plain.tif", m, photometric="minisblack")  # uncompressed: memory-mapped
    tifffile.imwrite(tmp_path / "packed.tiff", m, compression="zlib", photometric="minisblack")
    for name in ("plain.tif", "packed.tiff"):
        np.testing.assert_array_equal(open_mask(tmp_path / name, (4, 5, 6), "t.mrc", 2).compute(), m)
    tifffile.imwrite(tmp_path / "slice.tif", m[0])
    assert open_mask(tmp_path / "slice.tif", (1, 5, 6), "t.mrc").shape == (1, 5, 6)
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    with pytest.raises(PicketError, match="cannot be read as a TIFF stack"):
        open_mask(tmp_path / "bad.tif", (4, 5, 6), "t.mrc")


@pytest.mark.parametrize("spec, says", [("copick:cytoplasm", "is not a copick run"),
                                        ("copick:", "is not copick:NAME"), ("copick:a::b", "is not copick:NAME")])
def test_copick_mask_needs_a_copick_run(tmp_path, sim_tiny, capsys, spec, says):
    """A copick segmentation named for a file input (or a malformed one): one line before any work."""
    out = tmp_path / "out"
    assert main(["run", str(sim_tiny["tomogram"]), "--out", str(out), "--cluster", "threads", "--mask", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err and f"--mask {spec}" in err
    assert not out.exists()


def test_exclude_drops_the_picks_a_mask_keeps(tmp_path, sim_tiny, capsys):
    """--exclude with the mask --mask keeps: the two pick sets are disjoint and together the unmasked run's picks
    (one rule, the centre's voxel, in both); a folder of NAME_exclude.mrc; an empty exclusion excludes nothing."""
    shape = mrcfile.mmap(sim_tiny["tomogram"], mode="r").data.shape
    region = np.zeros(shape, np.uint8)
    region[:, :50, :] = 1
    folder = tmp_path / "regions"
    folder.mkdir()
    stem = sim_tiny["tomogram"].stem
    _write(folder / f"{stem}_mask.mrc", region)
    _write(folder / f"{stem}_exclude.mrc", region)
    free = _picks(run(sim_tiny["tomogram"], tmp_path / "free", [WF], **KW)[0])
    kept = _picks(run(sim_tiny["tomogram"], tmp_path / "kept", [WF], mask=str(folder), **KW)[0])
    res = run(sim_tiny["tomogram"], tmp_path / "dropped", [WF], exclude=str(folder), **KW)[0]
    dropped = _picks(res)
    assert 0 < len(kept) < len(free) and 0 < len(dropped) < len(free) and len(kept) + len(dropped) == len(free)
    both = pd.concat([kept, dropped]).sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(both.drop(columns="id"), free.drop(columns="id"))
    doc = json.loads(res.run_json.read_text())
    assert doc["exclude"]["path"].endswith("_exclude.mrc") and doc["exclude"]["voxels_inside"] == int(region.sum())
    assert doc["mask"] is None
    import yaml

    picket = yaml.safe_load(Path(res.picks[WF]["yaml"]).read_text())  # the picks' own metadata names the region
    assert picket["metadata"]["regions"]["exclude"]["path"] == doc["exclude"]["path"]
    _write(tmp_path / "empty.mrc", np.zeros(shape, np.uint8))
    none = _picks(run(sim_tiny["tomogram"], tmp_path / "none", [WF], exclude=str(tmp_path / "empty.mrc"), **KW)[0])
    pd.testing.assert_frame_equal(none, free)
    out = tmp_path / "bad"
    assert main(["run", str(sim_tiny["tomogram"]), "--out", str(out), "--cluster", "threads", "--exclude",
                 str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--exclude" in err and "NAME_exclude.mrc" in err and not out.exists()


def test_a_coarser_mask_tiles_the_same_box():
    """A mask of twice the voxel size covers the tomogram's box corner to corner: tomogram voxels 0-1 fall in its
    voxel 0 and 2-3 in voxel 1, the last ones included (a centre-to-centre mapping put voxel 3 outside it)."""
    import dask.array as da

    from picket_dask.io.roi import RegionMask

    mask = np.zeros((2, 2, 2), np.uint8)
    mask[1, 1, 1] = 1
    roi = RegionMask(da.from_array(mask), (0.5, 0.5, 0.5), "m", 20.0)
    pts = np.array([[i, i, i] for i in range(4)], float)
    np.testing.assert_array_equal(roi.inside(pts), [False, False, True, True])
    mask[:] = 1
    assert RegionMask(da.from_array(mask), (0.5, 0.5, 0.5), "m", 20.0).inside(pts).all()
