"""GPU vs CPU on one machine: warm-up, features + labels per feature-clusterer pair, and the
default workflows end to end. Needs cupy and a CUDA device (dask-cuda for the end-to-end case).

    python benchmarks/gpu.py [--tomogram T.mrc] [--sections warmup,pairs,e2e] [--chunks 128,256]
                             [--large 256,512,512] [--results DIR]

- warmup: a fresh process imports picket_dask, starts CUDA and labels a small volume on the GPU
  (all six pairs' kernels); run twice: the first compiles the kernels, the second finds them in
  cupy's on-disk cache (what a user's second run gets).
- pairs: the dev-set tomogram (default: the crowded one) blurred and scaled once, the six models
  fitted once on the CPU (250k sample); then per pair the label pass alone: on the CPU (dask's
  threaded scheduler, all cores) and on the GPU (cupy chunks already on the device, labels back on
  the host), with the GPU tiling of segment/apply.py and with the CPU's tiles on the GPU (the path
  before it, GPU_TILING = False); labels compared voxel by voxel to the CPU's. Median of --repeats
  after one warm-up pass on the GPU (the CPU tiles on the GPU: one pass, after the new path warmed up).
- e2e: `picket_dask.run` with the default workflows on a tomogram tiled to --large, on the CPU
  (threads) and with --gpu (dask-cuda), the GPU one twice (the second is warm), and optionally
  (`--e2e-devices gpu-threads`) with cupy chunks on dask's threaded scheduler; stage table from
  run.json and pick counts per workflow.
Rows go to DIR/gpu.csv (default benchmarks/results), and a table is printed per section.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import RESULTS  # noqa: E402

DEVSET = Path(__file__).resolve().parents[1] / ".." / "shared" / "devset"
PAIRS = [(f, c) for f in ("intensities", "ffts", "gabor") for c in ("kmeans", "gmm")]
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[gpu +{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def write_row(results: Path, row: dict) -> None:
    import csv

    results.mkdir(parents=True, exist_ok=True)
    path = results / "gpu.csv"
    rows = list(csv.DictReader(open(path))) if path.exists() else []
    rows.append({"date": time.strftime("%Y-%m-%d %H:%M"), **row})
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    print(json.dumps(row), flush=True)


def device_name() -> str:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props.get("name", b"?")
    return (name.decode() if isinstance(name, bytes) else str(name)) + f", {os.cpu_count()} cores"


WARMUP_CHILD = r"""
import time; t0 = time.perf_counter()
import numpy as np, dask.array as da
from picket_dask.config import SegmentParams
from picket_dask.segment.apply import label_block
from picket_dask.segment.neighborhoods import gather_neighborhoods, sample_voxels
from picket_dask.segment.preprocess import preprocess
from picket_dask.segment.semantic import FitSample, fit_models
vol = np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32)
scaled, _, _ = preprocess(da.from_array(vol, chunks=vol.shape))
coords = sample_voxels(vol.shape, None, 2000, 0)
pairs = [(f, c) for f in ("intensities", "ffts", "gabor") for c in ("kmeans", "gmm")]
segs = fit_models(FitSample(coords, gather_neighborhoods(scaled, coords)), pairs, SegmentParams(num_gabor_features=16))
dec = [s.model.decision for s in segs]
padded = np.pad(scaled.compute(), 2)
t1 = time.perf_counter()
import cupy
cupy.cuda.runtime.getDeviceCount(); cupy.zeros(1).sum(); cupy.cuda.Device().synchronize()
t2 = time.perf_counter()
label_block(cupy.asarray(padded), dec, vol.shape); cupy.cuda.Device().synchronize()
t3 = time.perf_counter()
label_block(cupy.asarray(padded), dec, vol.shape); cupy.cuda.Device().synchronize()
t4 = time.perf_counter()
print("WARMUP", t1 - t0, t2 - t1, t3 - t2, t4 - t3)
"""


def section_warmup(a) -> None:
    for run in ("cold kernel cache", "warm kernel cache"):
        out = subprocess.run([sys.executable, "-c", WARMUP_CHILD], capture_output=True, text=True, timeout=300)
        line = [s for s in out.stdout.splitlines() if s.startswith("WARMUP")]
        if not line:
            raise RuntimeError(out.stderr[-2000:])
        imp, cuda, first, second = map(float, line[0].split()[1:])
        log(f"warm-up ({run}): import+fit {imp:.2f} s, CUDA init {cuda:.2f} s, first GPU label call {first:.2f} s, "
            f"second {second:.3f} s")
        write_row(a.results, {"section": "warmup", "case": run, "device": device_name(), "cuda_init_s": round(cuda, 3),
                              "first_label_s": round(first, 3), "second_label_s": round(second, 4),
                              "warmup_s": round(cuda + first, 3)})


def _time(fn, repeats: int, warm: bool = True) -> tuple[float, object]:
    if warm:
        fn()  # warm-up pass (kernel compile, memory pool)
    ts, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def section_pairs(a) -> None:
    import cupy
    import dask
    import dask.array as da
    import mrcfile
    import numpy as np

    from picket_dask.backend import to_host
    from picket_dask.config import SegmentParams
    from picket_dask.segment import apply
    from picket_dask.segment.neighborhoods import gather_neighborhoods, sample_voxels
    from picket_dask.segment.preprocess import preprocess
    from picket_dask.segment.semantic import FitSample, fit_models

    with mrcfile.open(a.tomogram, permissive=True) as m:
        vol = np.asarray(m.data, np.float32)
    with dask.config.set(scheduler="threads"):
        scaled, _, _ = preprocess(da.from_array(vol, chunks=128))
        scaled = scaled.compute()
        params = SegmentParams(max_fit_voxels=250_000)
        coords = sample_voxels(vol.shape, None, params.max_fit_voxels, params.seed)
        t = time.perf_counter()
        segs = fit_models(FitSample(coords, gather_neighborhoods(da.from_array(scaled, chunks=128), coords)), PAIRS, params)
        log(f"fitted six models on the CPU in {time.perf_counter() - t:.1f} s")
    rows = []
    for seg in segs:
        dec = [seg.model.decision]
        with dask.config.set(scheduler="threads"):
            cpu_s, cpu = _time(lambda: apply.semantic_labels(da.from_array(scaled, chunks=128), dec).compute(), a.repeats,
                               warm=False)
        row = {"section": "pairs", "pair": seg.name, "shape": "x".join(map(str, vol.shape)), "device": device_name(),
               "cpu_s": round(cpu_s, 3)}
        for chunks in a.chunks:
            for tiling in (True, False):
                if not tiling and chunks != a.chunks[0]:
                    continue
                apply.GPU_TILING = tiling
                dev = da.from_array(scaled, chunks=chunks).map_blocks(cupy.asarray).persist()
                try:
                    with dask.config.set(scheduler="threads"):
                        def go(dev=dev):
                            r = apply.semantic_labels(dev, dec).map_blocks(to_host, dtype=np.uint8).compute()
                            cupy.cuda.Device().synchronize()
                            return r
                        gpu_s, got = _time(go, a.repeats if tiling else 1, warm=tiling)
                finally:
                    apply.GPU_TILING = True
                key = f"gpu{'' if tiling else '_cpu_tiles'}_c{chunks}"
                row[f"{key}_s"] = round(gpu_s, 3)
                row[f"{key}_differing_voxels"] = int((got != cpu).sum())
                del dev
                cupy.get_default_memory_pool().free_all_blocks()
        best = min(v for k, v in row.items() if k.startswith("gpu_c") and k.endswith("_s"))
        row["speedup_vs_cpu"] = round(cpu_s / best, 1)
        log(json.dumps(row))
        write_row(a.results, row)
        rows.append(row)


def _run_case(tomo: str, out: str, gpu: bool, dask_cuda: bool = True) -> dict:
    """One run of the default workflows: CPU (threads), or device gpu under dask-cuda (``--gpu``) or
    under dask's threaded scheduler in this process (cupy chunks, no dask-cuda)."""
    import picket_dask as pk
    from picket_dask.cluster import get_client
    from picket_dask.config import DEFAULT_WORKFLOWS

    t = time.perf_counter()
    with get_client("threads", gpu=gpu and dask_cuda, quiet=True):
        t_client = time.perf_counter() - t
        res = pk.run([tomo], out, list(DEFAULT_WORKFLOWS), **({"device": "gpu"} if gpu else {}))
    doc = json.loads((Path(out) / res[0].name / "run.json").read_text())
    return {"client_s": round(t_client, 2), "timings": doc["timings_s"], "picks": doc.get("n_picks")}


def section_e2e(a) -> None:
    from stages import tiled_tomogram

    tomo = str(tiled_tomogram(Path(a.tomogram), tuple(a.large)))
    cases = [(label, gpu) for label, gpu in (("cpu", False), ("gpu cold", True), ("gpu warm", True),
                                             ("gpu-threads", True)) if label.split()[0] in a.e2e_devices.split(",")]
    for label, gpu in cases:
        log(f"e2e {label}: starting (picket-dask's progress lines say which stage runs; PICKET_DASK_QUIET hides them)")
        with tempfile.TemporaryDirectory(prefix="picket-gpu-e2e-") as out:
            t = time.perf_counter()
            r = _run_case(tomo, out, gpu, dask_cuda=label != "gpu-threads")
            wall = time.perf_counter() - t
        tm = r["timings"]
        stages = {k: round(v, 2) for k, v in tm.items() if isinstance(v, (int, float))}
        log(f"e2e {label}: wall {wall:.1f} s, run total {tm.get('total')}, picks {r['picks']}")
        write_row(a.results, {"section": "e2e", "case": label, "shape": "x".join(map(str, a.large)), "device": device_name(),
                              "wall_s": round(wall, 2), "client_s": r["client_s"], "total_s": tm.get("total"),
                              "picks": json.dumps(r["picks"]), "stages": json.dumps(stages)})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tomogram", default=str(DEVSET / "small_crowded_s3003.mrc"))
    ap.add_argument("--sections", default="warmup,pairs,e2e")
    ap.add_argument("--chunks", default="128,256", type=lambda s: [int(v) for v in s.split(",")])
    ap.add_argument("--large", default="256,512,512", type=lambda s: [int(v) for v in s.split(",")])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--e2e-devices", default="cpu,gpu", help="e2e: run on these (cpu; gpu: dask-cuda, cold then "
                    "warm; gpu-threads: cupy chunks on dask's threaded scheduler, no dask-cuda)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    a = ap.parse_args()
    log(f"device: {device_name()}")
    failed = 0
    for name in a.sections.split(","):
        try:
            {"warmup": section_warmup, "pairs": section_pairs, "e2e": section_e2e}[name](a)
        except Exception:  # report and go on with the next section
            failed += 1
            log(f"section {name} FAILED\n{traceback.format_exc()}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
