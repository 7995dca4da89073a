#!/usr/bin/env bash
#SBATCH --job-name=picket
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=02:00:00
# One tomogram per SLURM array task, each on its own node's cores, all into one output folder:
#   ls /data/tomograms/*.mrc > tomograms.txt
#   sbatch --array=1-$(wc -l < tomograms.txt)%20 deploy/run_slurm_array.sh tomograms.txt /scratch/picket-out
# Each task ends by gathering every finished tomogram's picks into OUT/WF.star (RELION 5) and OUT/WF.csv;
# after the last task, `picket-dask collect OUT` once more makes sure none finished unseen by the others.
# A task restarted (requeued, or the array submitted again) resumes its tomogram; two at once on one stop at its lock.
set -euo pipefail
LIST=${1:?file with one tomogram path per line}
OUT=${2:?output folder}
TASK=${SLURM_ARRAY_TASK_ID:?run with sbatch --array=1-N}
TOMO=$(sed -n "${TASK}p" "$LIST")
[ -n "$TOMO" ] || { echo "no line $TASK in $LIST" >&2; exit 2; }
shift 2
picket-dask run "$TOMO" --out "$OUT" --cluster local --workers 1 --threads "${SLURM_CPUS_PER_TASK:-4}" "$@"
