#!/usr/bin/env bash
# Submit a batch to SLURM: one array task per tomogram (run_slurm_array.sh, all into one output folder), then one
# job that gathers every tomogram's picks and draws the batch's report once all tasks have ended (whether each
# succeeded or not):
#   ls /data/tomograms/*.mrc > tomograms.txt
#   deploy/submit_slurm_array.sh tomograms.txt /scratch/picket-out [picket-dask run options]
# gives OUT/NAME/ per tomogram, then OUT/WF.star (RELION 5), OUT/WF.csv, OUT/summary.csv and OUT/report.html.
# The tasks do not collect each (each would read every finished folder: for N tomograms N^2 reads, and ~20 s a
# task at 800); the one collect job does it once. Environment: PICKET_SBATCH, extra sbatch options for both jobs
# (e.g. "--partition=short --account=lab"); PICKET_MAX_TASKS, array tasks running at once (default 20).
set -euo pipefail
LIST=${1:?file with one tomogram path per line}
OUT=${2:?output folder}
shift 2
N=$(grep -c . "$LIST" || true)
[ "$N" -gt 0 ] || { echo "$LIST: no tomogram paths in it; write one path per line" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC2086  # PICKET_SBATCH holds several options
array=$(sbatch --parsable --array=1-"$N"%"${PICKET_MAX_TASKS:-20}" ${PICKET_SBATCH:-} "$here/run_slurm_array.sh" "$LIST" "$OUT" "$@")
array=${array%%;*}
# shellcheck disable=SC2086
collect=$(sbatch --parsable --dependency=afterany:"$array" --job-name=picket-collect --cpus-per-task=1 ${PICKET_SBATCH:-} \
          --wrap "picket-dask collect $(printf %q "$OUT") && picket-dask report $(printf %q "$OUT")")
echo "array job $array: $N tomograms into $OUT; collect job ${collect%%;*} after it (OUT/WF.star, OUT/summary.csv, OUT/report.html)"
