#!/usr/bin/env bash
# Stops the test cluster of tests/slurm/start_cluster.sh: slurmd, slurmctld and munged, each by
# the PID in its pid file (SIGTERM, then SIGKILL after 10 s: slurmd can ignore SIGTERM while it
# retries registering with a controller that is gone). Removes the /etc/slurm links it made.
set -uo pipefail

STATE=${KILOSNAKE_SLURM_DIR:-/tmp/kilosnake-slurm}

stop() {
    local name=$1 pidfile=$STATE/run/$1.pid pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "stop_cluster: $name ($pid) ignored SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    rm -f "$pidfile"
}

stop slurmd
stop slurmctld
stop munged

for f in slurm.conf gres.conf; do
    if [ "$(readlink "/etc/slurm/$f" 2>/dev/null)" = "$STATE/etc/$f" ]; then
        rm -f "/etc/slurm/$f"
    fi
done
exit 0
