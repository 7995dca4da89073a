"""Denoising (segment/denoise.py): chunked == whole volume, edges kept while noise drops, the option
through config, CLI and run.json."""

import json
import typing

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi

from picket_dask.cli import main
from picket_dask.config import RunConfig, SegmentParams
from picket_dask.errors import PicketError
from picket_dask.segment.denoise import METHODS, denoise, diffuse, edge_scale, halo_for, steps_for
from picket_dask.segment.preprocess import preprocess


def _sphere(shape=(40, 48, 56), radius=10, noise=0.5, seed=0):
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    clean = (sum((g - s / 2) ** 2 for g, s in zip(grids, shape)) <= radius**2).astype(np.float32)
    return clean, clean + np.random.default_rng(seed).normal(0, noise, shape).astype(np.float32)


def test_steps_and_halo_follow_sigma():
    assert steps_for(2.0) == 16 and halo_for(2.0) == 16 + 1 + 8
    assert steps_for(1.0) == 4 and halo_for(1.0) == 4 + 1 + 4


@pytest.mark.parametrize("chunks", [(27, 27, 30), (40, 26, 56), (13, 48, 20), (8, 8, 8)])
def test_chunked_equals_whole_volume(chunks):
    _, vol = _sphere((12, 48, 56), radius=5) if chunks == (8, 8, 8) else _sphere()  # 12 < the halo (25)
    scale = edge_scale(da.from_array(vol), 2.0)
    whole = diffuse(vol, 2.0, scale)
    chunked = denoise(da.from_array(vol, chunks=chunks), "diffusion", 2.0, scale=scale)
    assert chunked.dtype == np.float32
    np.testing.assert_allclose(chunked.compute(), whole, atol=1e-5)
    # the scale estimated from the data does not depend on the chunking either
    assert edge_scale(da.from_array(vol, chunks=chunks), 2.0) == pytest.approx(scale, rel=1e-5)


def test_edges_kept_noise_removed():
    clean, vol = _sphere()
    out = denoise(da.from_array(vol, chunks=24), "diffusion", 2.0).compute()
    inside = ndi.binary_erosion(clean > 0, iterations=3)
    outside = ~ndi.binary_dilation(clean > 0, iterations=3)
    contrast = out[inside].mean() - out[outside].mean()
    assert contrast == pytest.approx(1.0, abs=0.05)  # the step keeps its height
    assert out[outside].std() < vol[outside].std() / 4  # noise SD 0.5 -> below 0.125
    # the edge stays sharp: the mean over 1-voxel shells rises from 0.2 to 0.8 within one shell (the
    # input's own step), where a Gaussian of the same sigma spreads it over four
    grids = np.ogrid[tuple(slice(0, s) for s in vol.shape)]
    shell = np.round(np.sqrt(sum((g - s / 2) ** 2 for g, s in zip(grids, vol.shape)))).astype(int)

    def ramp(v):
        prof = ndi.mean(v, shell, index=np.arange(4, 17))
        return int(((prof > 0.2) & (prof < 0.8)).sum())

    assert ramp(out) <= 1 and ramp(ndi.gaussian_filter(vol, 2.0)) >= 3


def test_preprocess_with_denoising_is_chunk_independent():
    _, vol = _sphere((30, 36, 40), radius=8)
    a, lo_a, hi_a = preprocess(da.from_array(vol, chunks=vol.shape), denoise="diffusion")
    b, lo_b, hi_b = preprocess(da.from_array(vol, chunks=(30, 20, 20)), denoise="diffusion")
    assert lo_a == pytest.approx(lo_b, abs=1e-5) and hi_a == pytest.approx(hi_b, abs=1e-5)
    np.testing.assert_allclose(a.compute(), b.compute(), atol=1e-5)
    plain, _, _ = preprocess(da.from_array(vol, chunks=vol.shape))
    assert not np.allclose(plain.compute(), a.compute())  # 'diffusion' did something; 'none' is the default


def test_none_returns_the_data_and_unknown_method_is_one_line():
    _, vol = _sphere((20, 20, 20))
    np.testing.assert_array_equal(denoise(da.from_array(vol), "none").compute(), vol)
    with pytest.raises(PicketError, match="is not a denoising method; use one of none, diffusion"):
        denoise(da.from_array(vol), "nlmeans")
    with pytest.raises(PicketError, match="no measurable noise"):
        denoise(da.zeros((20, 20, 20), chunks=10), "diffusion")


def test_config_and_presets():
    assert typing.get_args(SegmentParams.model_fields["denoise"].annotation) == METHODS
    assert SegmentParams().denoise == "none"
    assert RunConfig(preset="reference").segment.denoise == "none"  # the reference stays exact
    assert RunConfig(preset="reference", segment={"denoise": "diffusion"}).segment.denoise == "diffusion"


def test_cli_bad_method_one_line(capsys, tmp_path):
    assert main(["run", str(tmp_path / "t.mrc"), "--denoise", "tomoeed"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--denoise tomoeed: is not a denoising method" in err


def test_run_records_denoising(tmp_path, sim_tiny):
    out = tmp_path / "out"
    assert main(["run", str(sim_tiny["tomogram"]), "--out", str(out), "--workflows", "intensities-kmeans-cc",
                 "--chunks", "32", "--max-fit-voxels", "20000", "--denoise", "diffusion", "--cluster", "threads"]) == 0
    doc = json.loads(next(out.glob("*/run.json")).read_text())
    assert doc["config"]["segment"]["denoise"] == "diffusion"
    assert doc["n_picks"]["intensities-kmeans-cc"] > 0
