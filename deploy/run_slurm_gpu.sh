#!/usr/bin/env bash
# GPU variant: one SLURM job per GPU; each worker advertises a GPU resource so chunk tasks land
# on GPU workers. Needs `pip install 'picket-dask[gpu,hpc]'` in the environment the jobs use.
#   bash deploy/run_slurm_gpu.sh /data/tomograms /scratch/picket-out 4
set -euo pipefail
IN=${1:?folder of tomograms}
OUT=${2:?output folder}
JOBS=${3:-2}
python - "$IN" "$OUT" "$JOBS" <<'PY'
import sys
from dask_jobqueue import SLURMCluster
from distributed import Client
import picket_dask as pk

inp, out, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
cluster = SLURMCluster(cores=8, processes=1, memory="64GB", walltime="02:00:00",
                       job_extra_directives=["--gres=gpu:1"],
                       worker_extra_args=["--resources", "GPU=1"])
cluster.scale(jobs=jobs)
with Client(cluster) as client:
    print("dashboard:", client.dashboard_link)
    pk.run([inp], out, ["gabor-gmm-cc", "gabor-kmeans-ws"], device="gpu", concurrent=jobs)
PY
