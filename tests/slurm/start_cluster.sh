#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests and for trying profiles/local-slurm.
#
#   sudo tests/slurm/start_cluster.sh            # prints the state folder when the node is idle
#   sudo tests/slurm/stop_cluster.sh             # stops the daemons by their PIDs
#
# What it does (no systemd needed; everything runs as root):
#   1. installs Debian's slurmctld, slurmd, slurm-client and munge when they are missing;
#   2. writes slurm.conf (partitions "cpu" and "gpu", the names profiles/slurm uses) and gres.conf
#      under $KILOSNAKE_SLURM_DIR and links them at /etc/slurm/: the plugin's job side removes
#      SLURM_CONF before its inner srun, and gres.conf is only looked up in /etc/slurm;
#   3. declares $FAKE_GPUS GPUs backed by dummy character devices (SLURM then sets
#      CUDA_VISIBLE_DEVICES in jobs that ask for a GPU; the jobs still compute on the CPU);
#   4. starts munged, slurmctld and slurmd with their own sockets, pid and log files, and waits
#      until the node is idle. On failure it prints the daemon logs and exits non-zero.
#
# Accounting (slurmdbd) is not set up: profiles/local-slurm polls with squeue instead of sacct,
# which needs MinJobAge well above the status interval (300 s here).
set -euo pipefail

STATE=${KILOSNAKE_SLURM_DIR:-/tmp/kilosnake-slurm}
FAKE_GPUS=${FAKE_GPUS:-1}
MEM_MB=${SLURM_MEM_MB:-}
NODE=$(hostname -s)

die() { echo "start_cluster: $*" >&2; exit 1; }
show_logs() {
    for f in "$STATE"/log/*.log; do
        [ -e "$f" ] || continue
        echo "----- $f (last 40 lines)" >&2
        tail -n 40 "$f" >&2
    done
}

[ "$(id -u)" -eq 0 ] || die "must run as root (the daemons run as root)"

# --- 1. packages ------------------------------------------------------------------------------
missing=0
for cmd in slurmctld slurmd sinfo sbatch squeue munged munge unmunge; do
    command -v "$cmd" >/dev/null 2>&1 || missing=1
done
if [ "$missing" -eq 1 ]; then
    command -v apt-get >/dev/null 2>&1 || die "SLURM is not installed and apt-get is unavailable"
    echo "start_cluster: installing slurmctld slurmd slurm-client munge" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# --- 2. configuration -------------------------------------------------------------------------
for f in slurm.conf gres.conf; do
    target=/etc/slurm/$f
    if [ -e "$target" ] || [ -L "$target" ]; then
        [ "$(readlink "$target" || true)" = "$STATE/etc/$f" ] \
            || die "$target exists and is not ours; refusing to replace a real cluster's config"
    fi
done
if [ -f "$STATE/run/slurmctld.pid" ] && kill -0 "$(cat "$STATE/run/slurmctld.pid")" 2>/dev/null; then
    die "a cluster from $STATE is running already; stop it with tests/slurm/stop_cluster.sh"
fi

rm -rf "$STATE"
mkdir -p "$STATE"/{etc,run,log,spool/ctld,spool/d,munge,dev}
chmod 700 "$STATE/munge"

if [ -z "$MEM_MB" ]; then
    total=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
    MEM_MB=$((total * 8 / 10))
fi
CPUS=$(nproc)

gres_line=""
gres_types=""
: >"$STATE/etc/gres.conf"
if [ "$FAKE_GPUS" -gt 0 ]; then
    for i in $(seq 0 $((FAKE_GPUS - 1))); do
        mknod "$STATE/dev/nvidia$i" c 1 3   # same device numbers as /dev/null
        echo "NodeName=$NODE Name=gpu File=$STATE/dev/nvidia$i" >>"$STATE/etc/gres.conf"
    done
    gres_line="Gres=gpu:$FAKE_GPUS"
    gres_types="GresTypes=gpu"
fi

cat >"$STATE/etc/slurm.conf" <<EOF
# Written by kilosnake tests/slurm/start_cluster.sh: a one-node test cluster.
ClusterName=kilosnake
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket.2
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
# squeue must still list finished jobs when Snakemake polls (3 x its status interval at least).
MinJobAge=300
SchedulerType=sched/backfill
$gres_types
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB $gres_line State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP
EOF

mkdir -p /etc/slurm
ln -sfn "$STATE/etc/slurm.conf" /etc/slurm/slurm.conf
ln -sfn "$STATE/etc/gres.conf" /etc/slurm/gres.conf
export SLURM_CONF=$STATE/etc/slurm.conf

# --- 3. daemons -------------------------------------------------------------------------------
mungekey --create --keyfile="$STATE/munge/munge.key" 2>/dev/null \
    || dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$STATE/munge/munge.key"
munged --force --key-file="$STATE/munge/munge.key" --socket="$STATE/munge/munge.socket.2" \
    --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" \
    --seed-file="$STATE/munge/munged.seed" || { show_logs; die "munged did not start"; }
munge -S "$STATE/munge/munge.socket.2" -n | unmunge -S "$STATE/munge/munge.socket.2" >/dev/null \
    || { show_logs; die "munge round trip failed"; }

slurmctld -c -f "$SLURM_CONF" || { show_logs; die "slurmctld did not start"; }
slurmd -f "$SLURM_CONF" || { show_logs; die "slurmd did not start"; }

# --- 4. wait for the node ---------------------------------------------------------------------
for _ in $(seq 1 150); do
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1 || true)
    case "$state" in
        idle*) echo "$STATE"; exit 0 ;;
    esac
    sleep 0.2
done
echo "start_cluster: node $NODE is '${state:-unknown}', not idle, after 30 s" >&2
sinfo -R >&2 || true
show_logs
exit 1
