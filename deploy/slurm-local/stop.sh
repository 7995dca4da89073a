#!/usr/bin/env bash
# Stop the one-node SLURM cluster started by start.sh DIR: cancel jobs first (they outlive slurmd),
# then stop the daemons by their PID files (never by process name).
set -u
DIR=${1:?state folder}
export SLURM_CONF="$DIR/slurm.conf"
scancel --user="$(id -un)" 2>/dev/null || true
sleep 1
MUNGE_PID=""
[ -f "$DIR/munged.pidfile" ] && MUNGE_PID=$(cat "$DIR/munged.pidfile")  # only if start.sh started munged
for f in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" $MUNGE_PID; do
  if [ -f "$f" ]; then
    kill "$(cat "$f")" 2>/dev/null || true
  fi
done
exit 0
