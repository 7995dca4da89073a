"""A real SLURM cluster (one node, started by deploy/slurm-local/start.sh): dask-jobqueue workers run
picket-dask and give the same picks as the threaded scheduler. Skipped, with the reason, where
the machine cannot run it (no root, no apt-get and no SLURM installed, or no dask-jobqueue)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from picket_dask.workflows import run

DEPLOY = Path(__file__).parent.parent / "deploy" / "slurm-local"
KW = dict(chunks=32, max_fit_voxels=20_000, min_distance_vox=6, concurrent=1)


def _why_not() -> str | None:
    if os.environ.get("PICKET_SKIP_SLURM"):
        return "PICKET_SKIP_SLURM is set"
    if os.geteuid() != 0:
        return "needs root to start munge and the SLURM daemons"
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        return "SLURM is not installed and apt-get is not available to install it"
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        return "dask-jobqueue is not installed (pip install 'picket-dask[hpc]')"
    return None


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = _why_not()
    if why:
        pytest.skip(why)
    d = tmp_path_factory.mktemp("slurm")
    out = subprocess.run(["bash", str(DEPLOY / "start.sh"), str(d)], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        pytest.skip(f"could not start SLURM here: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
    conf = out.stdout.strip().split("=", 1)[1]
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield d
    subprocess.run(["bash", str(DEPLOY / "stop.sh"), str(d)], capture_output=True, timeout=120)
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


@pytest.mark.slow
def test_slurm_cluster_run_equals_local(slurm, tmp_path, sim_tiny):
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    local = run(sim_tiny["tomogram"], tmp_path / "local", ["gabor-kmeans-cc"], **KW)[0]
    cluster = SLURMCluster(cores=1, memory="2GB", processes=1, queue="debug", walltime="00:10:00", interface="lo",
                           python=sys.executable, log_directory=str(slurm / "joblogs"), local_directory=str(slurm))
    try:
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=180)
            assert len(client.scheduler_info()["workers"]) == 2
            res = run(sim_tiny["tomogram"], tmp_path / "slurm", ["gabor-kmeans-cc"], **KW)[0]
            jobs = subprocess.run(["squeue", "-h", "-o", "%j %T"], capture_output=True, text=True).stdout
            assert jobs.count("RUNNING") >= 2, jobs
    finally:
        cluster.close()
    a = pd.read_csv(local.picks["gabor-kmeans-cc"]["csv"], comment="#")
    b = pd.read_csv(res.picks["gabor-kmeans-cc"]["csv"], comment="#")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_jobqueue_without_a_job_size_is_one_line(kind, monkeypatch):
    """dask-jobqueue without cores / memory configured (no ~/.config/dask/jobqueue.yaml) raises a ValueError
    deep in its constructor: picket-dask says which setting is missing and where it goes."""
    import dask

    from picket_dask.cluster import get_client
    from picket_dask.errors import PicketError

    pytest.importorskip("dask_jobqueue")
    with dask.config.set({f"jobqueue.{kind}.cores": None, f"jobqueue.{kind}.memory": None}):
        with pytest.raises(PicketError, match=f"--cluster {kind}: dask-jobqueue has no job size .*jobqueue.{kind}"):
            with get_client(kind, quiet=True):
                pass


@pytest.mark.slow
def test_array_script_one_tomogram_per_task(slurm, tmp_path, sim_tiny):
    """deploy/submit_slurm_array.sh as a user runs it: two array tasks (run_slurm_array.sh), two tomograms, one --out,
    the tasks collecting nothing, and the collect job submitted after them leaving one RELION particle set."""
    import time

    import starfile

    names = []
    for n in ("TS_01", "TS_02"):
        shutil.copy(sim_tiny["tomogram"], tmp_path / f"{n}.mrc")
        names.append(str(tmp_path / f"{n}.mrc"))
    (tmp_path / "list.txt").write_text("\n".join(names) + "\n")
    out = tmp_path / "out"
    script = Path(__file__).parent.parent / "deploy" / "submit_slurm_array.sh"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # this environment's picket-dask
           "PICKET_SBATCH": "--mem=2G --partition=debug --cpus-per-task=1"}
    sub = subprocess.run(["bash", str(script), str(tmp_path / "list.txt"), str(out), "--workflows", "gabor-kmeans-cc",
                          "--chunks", "32", "--max-fit-voxels", "20000"],
                         capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert sub.returncode == 0, sub.stderr
    array, collect = (re.search(rf"{kind} job (\d+)", sub.stdout).group(1) for kind in ("array", "collect"))
    deadline = time.time() + 600
    while subprocess.run(["squeue", "-h", "-j", f"{array},{collect}"], capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline, "jobs still queued or running after 10 minutes"
        time.sleep(3)
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("slurm-*.out")))
    assert (out / "TS_01" / "run.json").is_file() and (out / "TS_02" / "run.json").is_file(), logs
    tasks = "".join(p.read_text() for p in sorted(tmp_path.glob(f"slurm-{array}_*.out")))
    assert "tomogram(s) in" not in tasks and "gabor-kmeans-cc" in tasks  # the tasks ran, and collected nothing
    assert (out / "summary.csv").is_file() and (tmp_path / f"slurm-{collect}.out").is_file(), logs  # the collect job's
    assert (out / "report.html").is_file() and (out / "TS_02" / "preview-gabor-kmeans-cc.png").is_file(), logs
    star = starfile.read(out / "gabor-kmeans-cc.star", always_dict=True)["particles"]
    assert set(star["rlnTomoName"]) == {"TS_01", "TS_02"}, logs
