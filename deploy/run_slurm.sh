#!/usr/bin/env bash
# Pick particles in every tomogram of a folder on a SLURM cluster.
# The script itself runs on a login or small interactive node: it starts the Dask scheduler there,
# submits worker jobs from ~/.config/dask/jobqueue.yaml (see jobqueue.yaml), and waits.
#   bash deploy/run_slurm.sh /data/tomograms /scratch/picket-out 8
set -euo pipefail
IN=${1:?folder of .mrc/.rec tomograms}
OUT=${2:?output folder}
JOBS=${3:-4}
picket-dask run "$IN" --out "$OUT" --workflows gabor-gmm-cc,gabor-kmeans-ws \
    --cluster slurm --jobs "$JOBS" --concurrent 4 --fit-on 3
