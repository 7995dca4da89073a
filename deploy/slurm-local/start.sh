#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine, for tests (needs root; Debian/Ubuntu).
#   source <(bash deploy/slurm-local/start.sh DIR)   # prints "export SLURM_CONF=..."
# Installs slurmctld, slurmd, slurm-client and munge with apt-get if they are missing.
# Everything (config, state, spool, logs, pid files) lives under DIR; stop.sh DIR stops it.
set -euo pipefail
DIR=${1:?state folder}
mkdir -p "$DIR"/{state,spool,log}
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >&2
fi
HOST=$(hostname -s)
# munge: runtime dir owned by munge, a 0400 key, the daemon as the munge user
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key >&2
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n >/dev/null 2>&1; then
  # munged writes its pid file as the munge user: keep it in /run/munge, note that we started it
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid >&2
  echo /run/munge/munged.pid > "$DIR/munged.pidfile"
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
fi
# 80% of the memory slurmd sees: asking for more than there is drains the node
MEM=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
MEM=$(( MEM * 8 / 10 ))
CPUS=$(slurmd -C | sed -n "s/.*CPUs=\([0-9]*\).*/\1/p" | head -1)  # not nproc: it follows OMP_NUM_THREADS
cat > "$DIR/slurm.conf" <<CONF
ClusterName=picket
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$DIR/slurm.conf"
/usr/sbin/slurmctld -f "$SLURM_CONF" >&2
/usr/sbin/slurmd -f "$SLURM_CONF" >&2
for _ in $(seq 100); do
  if sinfo -h -o "%t" 2>/dev/null | grep -qE "^idle"; then break; fi
  sleep 0.2
done
sinfo -h -o "%P %t %c %m" >&2
echo "export SLURM_CONF=$SLURM_CONF"
