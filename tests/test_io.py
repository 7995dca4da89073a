"""MRC -> OME-Zarr conversion, reading back, and every bad input of the foundation issue."""

import numpy as np
import pytest

from picket_dask.cli import main
from picket_dask.errors import PicketError
from picket_dask.io.mrc import write_mrc
from picket_dask.io.tomogram import convert, open_tomogram


def _mrc(tmp_path, vol):
    write_mrc(tmp_path / "a.mrc", vol, 10)
    return tmp_path / "a.mrc"


@pytest.fixture
def vol(rng):
    return rng.normal(size=(20, 33, 41)).astype(np.float32)


def test_round_trip_exact_and_voxel_size(tmp_path, vol):
    write_mrc(tmp_path / "a.mrc", vol, (12.5, 12.5, 12.5))
    out = convert(tmp_path / "a.mrc", tmp_path / "a.zarr", chunks=16)
    t = open_tomogram(out, chunks=16)
    assert t.voxel_size == (12.5, 12.5, 12.5)
    np.testing.assert_array_equal(t.data.compute(), vol)
    # lazy MRC reading gives the same blocks
    np.testing.assert_array_equal(open_tomogram(tmp_path / "a.mrc", chunks=7).data.compute(), vol)


@pytest.mark.parametrize("span_row_bytes", [0, 1 << 20])
def test_mrc_boxes_by_row_and_by_span(tmp_path, vol, monkeypatch, span_row_bytes):
    """A box narrower than the file reads the same voxels one row at a time and as one span per plane."""
    from picket_dask.io import mrc

    monkeypatch.setattr(mrc, "SPAN_ROW_BYTES", span_row_bytes)
    reader, _, perm = mrc.read_header(_mrc(tmp_path, vol))
    assert perm == (0, 1, 2)
    rng = np.random.default_rng(1)
    for _ in range(30):
        lo = [int(rng.integers(0, n)) for n in vol.shape]
        hi = [int(rng.integers(a + 1, n + 1)) for a, n in zip(lo, vol.shape)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        np.testing.assert_array_equal(reader[box], vol[box])


def test_ome_zarr_reader_opens_it(tmp_path, vol):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    write_mrc(tmp_path / "a.mrc", vol, 10)
    convert(tmp_path / "a.mrc", tmp_path / "a.zarr", chunks=16)
    node = list(Reader(parse_url(str(tmp_path / "a.zarr")))())[0]
    assert len(node.data) == 3
    np.testing.assert_array_equal(np.asarray(node.data[0]), vol)
    np.testing.assert_allclose(np.asarray(node.data[1]), vol[:20, :32, :40].reshape(10, 2, 16, 2, 20, 2).mean(axis=(1, 3, 5)), rtol=1e-5)
    scale = node.metadata["coordinateTransformations"][1][0]["scale"]
    assert scale == [20.0, 20.0, 20.0]


def test_ngff_05(tmp_path, vol):
    from picket_dask.io.omezarr import ZARR3

    if not ZARR3:
        with pytest.raises(PicketError, match="needs zarr >= 3"):
            convert(_mrc(tmp_path, vol), tmp_path / "a.zarr", ngff="0.5")
        return
    write_mrc(tmp_path / "a.mrc", vol, 10)
    convert(tmp_path / "a.mrc", tmp_path / "a.zarr", chunks=16, ngff="0.5")
    assert (tmp_path / "a.zarr" / "zarr.json").exists()
    np.testing.assert_array_equal(open_tomogram(tmp_path / "a.zarr").data.compute(), vol)


def _err(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    return err


def test_not_an_mrc(tmp_path, capsys):
    (tmp_path / "x.mrc").write_bytes(b"hello world" * 100)
    err = _err(capsys, ["convert", str(tmp_path / "x.mrc"), str(tmp_path / "o.zarr")])
    assert "x.mrc" in err and "MRC" in err
    assert not (tmp_path / "o.zarr").exists()


def test_truncated(tmp_path, vol, capsys):
    write_mrc(tmp_path / "a.mrc", vol, 10)
    data = (tmp_path / "a.mrc").read_bytes()
    (tmp_path / "t.mrc").write_bytes(data[: len(data) // 2])
    err = _err(capsys, ["convert", str(tmp_path / "t.mrc"), str(tmp_path / "o.zarr")])
    assert "t.mrc" in err
    assert not (tmp_path / "o.zarr").exists()


def test_2d(tmp_path, capsys):
    write_mrc(tmp_path / "flat.mrc", np.zeros((1, 30, 30), np.float32), 10)
    err = _err(capsys, ["convert", str(tmp_path / "flat.mrc"), str(tmp_path / "o.zarr")])
    assert "3-D" in err


def test_empty_axis(tmp_path, capsys):
    """A header with an axis of size 0 (a crop gone wrong): one line saying so, no NumPy warning before it."""
    write_mrc(tmp_path / "e.mrc", np.zeros((20, 30, 0), np.float32), 10)
    err = _err(capsys, ["run", str(tmp_path / "e.mrc"), "--out", str(tmp_path / "out")])
    assert "e.mrc: holds no voxels (shape (20, 30, 0))" in err and "Warning" not in err
    assert not (tmp_path / "out").exists()


def test_nan_leaves_nothing(tmp_path, vol, capsys):
    vol[5, 5, 5] = np.nan
    write_mrc(tmp_path / "n.mrc", vol, 10)
    err = _err(capsys, ["convert", str(tmp_path / "n.mrc"), str(tmp_path / "o.zarr"), "--chunks", "16"])
    assert "NaN" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "n.mrc"]


def test_nan_and_inf_one_message(tmp_path, vol, capsys):
    """Writing NaN/inf prints nothing (mrcfile's header statistics warned twice); running on the file
    is one line, nothing before it."""
    import warnings

    vol[5, 5, 5], vol[6, 6, 6] = np.nan, np.inf
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_mrc(tmp_path / "n.mrc", vol, 10)
    assert not caught, [str(w.message) for w in caught]
    err = _err(capsys, ["run", str(tmp_path / "n.mrc"), "--out", str(tmp_path / "o"), "--cluster", "threads"])
    assert err.startswith("picket-dask: error: ") and "NaN" in err


def test_missing_voxel_size(tmp_path, vol, capsys):
    write_mrc(tmp_path / "z.mrc", vol, 0)
    err = _err(capsys, ["convert", str(tmp_path / "z.mrc"), str(tmp_path / "o.zarr")])
    assert "--voxel-size" in err
    assert main(["convert", str(tmp_path / "z.mrc"), str(tmp_path / "o.zarr"), "--voxel-size", "8"]) == 0
    assert open_tomogram(tmp_path / "o.zarr").voxel_size == (8.0, 8.0, 8.0)


def test_existing_output_needs_overwrite(tmp_path, vol, capsys):
    write_mrc(tmp_path / "a.mrc", vol, 10)
    assert main(["convert", str(tmp_path / "a.mrc"), str(tmp_path / "o.zarr")]) == 0
    err = _err(capsys, ["convert", str(tmp_path / "a.mrc"), str(tmp_path / "o.zarr")])
    assert "--overwrite" in err
    assert main(["convert", str(tmp_path / "a.mrc"), str(tmp_path / "o.zarr"), "--overwrite"]) == 0


def test_unwritable_output(tmp_path, vol, capsys):
    import os

    write_mrc(tmp_path / "a.mrc", vol, 10)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        err = _err(capsys, ["convert", str(tmp_path / "a.mrc"), str(ro / "o.zarr")])
        assert "writable" in err
    finally:
        ro.chmod(0o700)


def test_unwritable_output_file_as_parent(tmp_path, vol, capsys):
    write_mrc(tmp_path / "a.mrc", vol, 10)
    (tmp_path / "afile").write_text("x")
    err = _err(capsys, ["convert", str(tmp_path / "a.mrc"), str(tmp_path / "afile" / "o.zarr")])
    assert "writable" in err


def test_unknown_format():
    with pytest.raises(PicketError, match="unknown tomogram format"):
        open_tomogram(__file__)


@pytest.mark.parametrize("case", ["nan", "constant", "thin"])
def test_bad_volume_found_after_conversion_leaves_nothing(tmp_path, vol, capsys, case):
    """NaN, a constant volume and one thinner than a neighbourhood are found once the conversion has begun:
    the tomogram's folder that run created and the output folder it created are removed again."""
    if case == "nan":
        vol[3, 4, 5] = np.nan
    elif case == "constant":
        vol[:] = 1.5
    else:
        vol = vol[:3]
    write_mrc(tmp_path / "b.mrc", vol, 10)
    err = _err(capsys, ["run", str(tmp_path / "b.mrc"), "--out", str(tmp_path / "o"), "--cluster", "threads"])
    assert err.startswith("picket-dask: error: ") and "b.mrc" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "b.mrc"]
    err = _err(capsys, ["segment", str(tmp_path / "b.mrc"), "--out", str(tmp_path / "s"), "--cluster", "threads"])
    assert "b.mrc" in err and not (tmp_path / "s").exists()


def test_bad_volume_keeps_what_was_there(tmp_path, vol, capsys):
    """An output folder that already held results, and a tomogram folder from an earlier run, stay."""
    import shutil

    vol[:] = 0.0
    write_mrc(tmp_path / "b.mrc", vol, 10)
    (tmp_path / "o" / "other").mkdir(parents=True)
    (tmp_path / "o" / "b").mkdir()
    (tmp_path / "o" / "b" / "earlier.txt").write_text("kept")
    _err(capsys, ["run", str(tmp_path / "b.mrc"), "--out", str(tmp_path / "o"), "--cluster", "threads"])
    assert (tmp_path / "o" / "other").is_dir() and (tmp_path / "o" / "b" / "earlier.txt").read_text() == "kept"
    shutil.rmtree(tmp_path / "o" / "b")
    _err(capsys, ["run", str(tmp_path / "b.mrc"), "--out", str(tmp_path / "o"), "--cluster", "threads"])
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["other"]


def test_particle_diameter_longer_than_the_volume(tmp_path, vol, capsys):
    """A smallest diameter longer than the tomogram's shortest side (a unit slip): one line, before any work."""
    write_mrc(tmp_path / "b.mrc", vol, 10)  # 20 slices of 10 A: 200 A
    err = _err(capsys, ["run", str(tmp_path / "b.mrc"), "--out", str(tmp_path / "o"), "--cluster", "threads",
                        "--particle-diameter-A", "600", "4000"])
    assert "--particle-diameter-A 600 4000" in err and "Angstrom" in err and "200 A" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "b.mrc"]


def test_unwritable_output_names_the_users_path(tmp_path):
    """A write that fails inside the temporary sibling is reported under the path the user gave, and the
    temporary is gone; an OSError elsewhere passes through unchanged."""
    from picket_dask.io.atomic import atomic_path

    with pytest.raises(PicketError) as caught:
        with atomic_path(tmp_path / "o.zarr") as tmp:
            tmp.mkdir()
            raise OSError(28, "No space left on device", str(tmp / "0" / "0.0.0"))
    assert str(caught.value).startswith(f"{tmp_path / 'o.zarr'}: cannot be written (No space left on device)")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "o.zarr"):
            raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "input.mrc"))


@pytest.mark.parametrize("option,message", [
    (["--z-fit", "15", "10"], "z_fit (15, 10): the lower slice must come before the upper one"),
    (["--z-fit", "-3", "10"], "z_fit (-3, 10): slices are counted from 0"),
    (["--z-extract", "9", "4"], "z_extract (9, 4): the lower slice must come before the upper one"),
    (["--z-extract", "4", "25"], "--z-extract 4 25: reaches past"),
    (["--z-fit", "18", "30"], "--z-fit 18 30: leaves no slice of"),
])
def test_z_bounds_refused_before_any_work(tmp_path, vol, capsys, option, message):
    """Reversed, negative or out-of-volume z bounds: one line naming the option, nothing written (20 slices)."""
    write_mrc(tmp_path / "b.mrc", vol, 10)
    err = _err(capsys, ["run", str(tmp_path / "b.mrc"), "--out", str(tmp_path / "o"), "--cluster", "threads", *option])
    assert message in err
    assert list(tmp_path.iterdir()) == [tmp_path / "b.mrc"]


def test_too_few_voxels_to_fit_is_one_line(tmp_path, vol, capsys):
    write_mrc(tmp_path / "b.mrc", vol, 10)
    err = _err(capsys, ["run", str(tmp_path / "b.mrc"), "--out", str(tmp_path / "o"), "--cluster", "threads",
                        "--max-fit-voxels", "5"])
    assert "leaves 5 voxels to fit the clusterers on" in err and "--max-fit-voxels" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "b.mrc"]


@pytest.mark.parametrize("mapping", [(3, 2, 1), (2, 3, 1), (1, 3, 2)])
def test_mrc_with_permuted_axes_reads_as_z_y_x(tmp_path, vol, mapping):
    """An MRC whose columns, rows and sections hold other map axes than X, Y, Z (MAPC, MAPR, MAPS) reads as
    (z, y, x), the same voxels as the standard file, and converts so."""
    import mrcfile

    mapc, mapr, maps = mapping  # storage axes (sections, rows, columns) hold map axes (maps, mapr, mapc)
    order = tuple({3: 0, 2: 1, 1: 2}[a] for a in (maps, mapr, mapc))  # (z, y, x) axis stored on each
    with mrcfile.new(tmp_path / "p.mrc") as m:
        m.set_data(np.ascontiguousarray(vol.transpose(order)))
        m.voxel_size = 10.0
        m.header.mapc, m.header.mapr, m.header.maps = mapping
    t = open_tomogram(tmp_path / "p.mrc", chunks=16)
    assert t.shape == vol.shape
    np.testing.assert_array_equal(t.data.compute(), vol)
    np.testing.assert_array_equal(open_tomogram(convert(tmp_path / "p.mrc", tmp_path / "p.zarr", chunks=16)).data.compute(), vol)


def test_a_second_run_on_the_same_output_stops_and_a_killed_one_leaves_no_lock(tmp_path, vol, capsys):
    """While one run writes OUT/NAME, another on it stops with one line naming the holder, writing nothing; a
    holder killed with SIGKILL leaves no lock held (the kernel drops it), so the next run goes ahead."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from picket_dask.io.atomic import exclusive

    write_mrc(tmp_path / "b.mrc", vol, 10)
    out = tmp_path / "o"
    with exclusive(out / ".b.lock", out / "b"):
        err = _err(capsys, ["segment", str(tmp_path / "b.mrc"), "--out", str(out), "--cluster", "threads"])
        assert "is being written by another picket-dask run (pid " in err and "another --out" in err
        assert sorted(p.name for p in out.iterdir()) == [".b.lock"]
    assert list(out.iterdir()) == []  # released and removed
    code = ("import sys, time; from picket_dask.io.atomic import exclusive\n"
            "with exclusive(sys.argv[1], 'x'):\n    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out / ".b.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PicketError, match="being written"):
            with exclusive(out / ".b.lock", out / "b"):
                pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
    t0 = time.time()
    with exclusive(out / ".b.lock", out / "b"):  # the file is still there, the lock is not
        assert time.time() - t0 < 5


def test_no_lock_support_runs_unguarded(tmp_path, monkeypatch):
    """A file system without flock (Lustre mounted without it, some NFS) must not stop a run: unguarded."""
    import errno
    import fcntl

    from picket_dask.io.atomic import exclusive

    def refuse(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", refuse)
    with exclusive(tmp_path / ".b.lock", tmp_path / "b"):
        ran = True
    assert ran and list(tmp_path.iterdir()) == []


def test_bad_options_fail_before_a_cluster_starts(tmp_path, vol, capsys, monkeypatch):
    """Checked before any cluster (the default embedded one) is started: one line, nothing else printed."""
    from picket_dask import cluster
    from picket_dask.io.copick_io import parse

    def no_cluster(*a, **k):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(cluster, "_start_cluster", no_cluster)
    write_mrc(tmp_path / "b.mrc", vol, 10)
    err = _err(capsys, ["run", str(tmp_path / "b.mrc"), "--out", str(tmp_path / "o"), "--z-extract", "5", "500"])
    assert "--z-extract 5 500: reaches past" in err
    with pytest.raises(PicketError, match="voxel_spacing 'abc' is not a number"):
        parse("copick://c.json?run=r&voxel_spacing=abc")


def test_copick_spacing_choice():
    """Of a copick run's voxel spacings: the coarsest within the working grid's target (5 % tolerance), else the
    finest (a bin-1 tomogram is never read when a bin-4 one resolves the particles)."""
    from picket_dask.io.copick_io import choose_spacing

    assert choose_spacing([5.0, 10.0, 20.0], 10.0) == 10.0
    assert choose_spacing([4.99, 10.012, 13.48], 10.0) == 10.012  # the portal's headers round
    assert choose_spacing([1.25, 5.0, 20.0], 10.0) == 5.0
    assert choose_spacing([14.0, 20.0], 10.0) == 14.0


def _other_writers_image(path, data, axes, scale):
    """An OME-Zarr image (NGFF 0.4) as other tools write it: their own axes, units and leading axes."""
    from picket_dask.io.omezarr import _create, _open_group, _set_ome_attrs

    group = _open_group(path, "0.4", "w")
    _create(group, "0", data.shape, data.shape, data.dtype, "0.4")[...] = data
    _set_ome_attrs(group, "0.4", "multiscales", [{"name": "t", "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}])


def test_ome_zarr_units_and_leading_axes(tmp_path, vol):
    """The voxel size of an OME-Zarr written in nanometres (or micrometres) is read in Angstrom (it was taken
    as Angstrom whatever the unit: 1 nm voxels became 1 A ones); a (t, c, z, y, x) image with one time point
    and channel is a tomogram; an unknown unit and a second channel are one line each."""
    from picket_dask.io.omezarr import open_image

    space = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    _other_writers_image(tmp_path / "nm.zarr", vol, space, [1.2, 1.0, 1.0])
    arr, vs, _ = open_image(tmp_path / "nm.zarr")
    assert vs == pytest.approx((12.0, 10.0, 10.0))
    np.testing.assert_array_equal(arr.compute(), vol)
    t = open_tomogram(tmp_path / "nm.zarr")
    assert t.voxel_size == pytest.approx((12.0, 10.0, 10.0))

    lead = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}]
    um = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    _other_writers_image(tmp_path / "tczyx.zarr", vol[None, None], lead + um, [1.0, 1.0, 0.001, 0.001, 0.001])
    arr, vs, _ = open_image(tmp_path / "tczyx.zarr")
    assert arr.shape == vol.shape and vs == pytest.approx((10.0, 10.0, 10.0))
    np.testing.assert_array_equal(arr.compute(), vol)

    _other_writers_image(tmp_path / "two.zarr", np.stack([vol, vol])[None], lead + um, [1.0, 1.0, 0.001, 0.001, 0.001])
    with pytest.raises(PicketError, match="axes before z, y, x may only have size 1"):
        open_image(tmp_path / "two.zarr")
    furlong = [{"name": a, "type": "space", "unit": "furlong"} for a in "zyx"]
    _other_writers_image(tmp_path / "f.zarr", vol, furlong, [1.0, 1.0, 1.0])
    with pytest.raises(PicketError, match="unit 'furlong'"):
        open_image(tmp_path / "f.zarr")


def test_inputs_sharing_a_name_refused(tmp_path, vol, capsys):
    """Two inputs with one name (``TS_01/tomo.mrc`` and ``TS_02/tomo.mrc``; ``a.mrc`` and ``a.rec``) would both write
    OUT/NAME: the second stopped at the first's lock, or wrote over its results. Refused before any work; an
    input given twice runs once."""
    from picket_dask.inputs import distinct_inputs

    for d in ("TS_01", "TS_02"):
        (tmp_path / d).mkdir()
        write_mrc(tmp_path / d / "tomo.mrc", vol, 10)
    with pytest.raises(PicketError, match="both write OUT/tomo"):
        distinct_inputs([tmp_path / "TS_01" / "tomo.mrc", tmp_path / "TS_02" / "tomo.mrc"])
    one = tmp_path / "TS_01" / "tomo.mrc"
    assert distinct_inputs([one, tmp_path / "TS_01" / ".." / "TS_01" / "tomo.mrc"]) == [one]

    folder = tmp_path / "both"
    folder.mkdir()
    write_mrc(folder / "a.mrc", vol, 10)
    write_mrc(folder / "a.rec", vol, 10)
    out = tmp_path / "out"
    assert main(["run", str(folder), "--out", str(out), "--cluster", "threads"]) == 2
    assert "both write OUT/a" in capsys.readouterr().err
    assert not out.exists()
    assert main(["segment", str(folder), "--out", str(out), "--cluster", "threads"]) == 2  # step 1 alone too
    assert "both write OUT/a" in capsys.readouterr().err
    assert not out.exists()


def test_space_group_zero_tomogram_read_tilt_series_refused(tmp_path, vol, capsys):
    """MRC2014 marks an image stack with space group 0, but many writers (SUSAN until 2022, for one) have put 0 on every
    file: a .rec/.mrc with it was refused as "not a 3-D volume". It is read as the tomogram it holds; a tilt
    series (.st, .ali) or particle stack (.mrcs) with space group 0 is refused, one line saying so."""
    import mrcfile

    for name in ("tomo.rec", "ts.st"):
        with mrcfile.new(str(tmp_path / name)) as m:
            m.set_data(vol)
            m.voxel_size = 10.0
            m.header.ispg = 0
    t = open_tomogram(tmp_path / "tomo.rec")
    assert t.shape == vol.shape
    np.testing.assert_array_equal(t.data.compute(), vol)
    assert main(["convert", str(tmp_path / "ts.st"), str(tmp_path / "ts.zarr")]) == 2
    assert "image stack of 20 images (a tilt series?)" in capsys.readouterr().err
    assert not (tmp_path / "ts.zarr").exists()


def test_folder_input_skips_tilt_series(tmp_path, vol):
    """An IMOD folder holds TS_01.st, TS_01.ali and TS_01.rec: a folder given as input is its tomograms (.rec, .mrc,
    .map, .zarr), not the stacks beside them (they were taken too, then refused, and the run with them)."""
    from picket_dask.inputs import expand_inputs

    for name in ("TS_01.st", "TS_01.ali", "TS_01.rec", "other.mrcs", "TS_01_mask.mrc"):
        write_mrc(tmp_path / name, vol, 10)
    assert expand_inputs([tmp_path]) == [tmp_path / "TS_01.rec"]  # nor the --mask files beside it


def test_ome_zarr_by_url_runs_as_its_folder(tmp_path, sim_tiny, capsys):
    """An OME-Zarr image named by URL (here file://; s3:// and https:// go the same fsspec way) is read through
    zarr, named after its last path segment, recorded as given, and picked as the same image's folder is."""
    import json

    import pandas as pd

    from picket_dask.io.tomogram import source_id, tomogram_name
    from picket_dask.workflows import run

    image = tmp_path / "TS_07.zarr"
    convert(sim_tiny["tomogram"], image)
    url = f"file://{image}/"
    assert tomogram_name(url) == "TS_07" and source_id(url) == f"file://{image}"
    kw = dict(chunks=32, max_fit_voxels=20_000)
    local = run(image, tmp_path / "a", ["gabor-kmeans-cc"], **kw)[0]
    remote = run(url, tmp_path / "b", ["gabor-kmeans-cc"], **kw)[0]
    pd.testing.assert_frame_equal(pd.read_csv(remote.picks["gabor-kmeans-cc"]["csv"], comment="#"),
                                  pd.read_csv(local.picks["gabor-kmeans-cc"]["csv"], comment="#"))
    assert remote.name == "TS_07" and json.loads(remote.run_json.read_text())["tomogram"] == f"file://{image}"
    out = tmp_path / "c"
    assert main(["run", f"file://{sim_tiny['tomogram']}", "--out", str(out), "--cluster", "threads"]) == 2
    assert "is a URL but not of an OME-Zarr image" in capsys.readouterr().err and not out.exists()
    assert main(["run", f"file://{tmp_path}/missing.zarr", "--out", str(out), "--cluster", "threads"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a readable OME-Zarr image" in err and not out.exists()
