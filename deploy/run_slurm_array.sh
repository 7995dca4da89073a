#!/usr/bin/env bash
#SBATCH --job-name=picket
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=02:00:00
# One tomogram per SLURM array task, each on its own node's cores, all into one output folder. Submit it with
# deploy/submit_slurm_array.sh LIST OUT [run options], which adds the job that collects all picks after the tasks;
# by hand:
#   sbatch --array=1-$(wc -l < tomograms.txt)%20 deploy/run_slurm_array.sh tomograms.txt /scratch/picket-out
#   picket-dask collect /scratch/picket-out        # when the tasks have ended: OUT/WF.star (RELION 5), OUT/WF.csv
# A task restarted (requeued, or the array submitted again) resumes its tomogram; two at once on one stop at its lock.
set -euo pipefail
LIST=${1:?file with one tomogram path per line}
OUT=${2:?output folder}
TASK=${SLURM_ARRAY_TASK_ID:?run with sbatch --array=1-N}
TOMO=$(sed -n "${TASK}p" "$LIST")
[ -n "$TOMO" ] || { echo "no line $TASK in $LIST" >&2; exit 2; }
shift 2
# --no-collect: the batch's picks are gathered once, after all tasks (submit_slurm_array.sh), not by each task
picket-dask run "$TOMO" --out "$OUT" --cluster local --workers 1 --threads "${SLURM_CPUS_PER_TASK:-4}" --no-collect "$@"
