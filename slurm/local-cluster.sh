#!/usr/bin/env bash
# A one-machine Slurm cluster for the tests and for trying slurm/*.sbatch without a real cluster.
#
#   slurm/local-cluster.sh start|stop|status
#
# Starts munged, slurmctld and slurmd directly (no systemd), with the config, state, spool, pid files and
# logs all under one folder, and stops exactly the daemons whose pid files are there. Jobs run as the
# calling user on this machine; the node offers the machine's real CPUs and memory (`slurmd -C`).
#
#   PRETRAIN_SLURM_DIR   the folder (default /tmp/pretrain-slurm)
#   PRETRAIN_SLURM_PORT  slurmctld's port; slurmd listens on the next one (default 6817)
#
# Needs Debian's slurmctld, slurmd and munge packages (apt-get install slurmctld slurmd munge).
set -euo pipefail

DIR=${PRETRAIN_SLURM_DIR:-/tmp/pretrain-slurm}
PORT=${PRETRAIN_SLURM_PORT:-6817}
CONF=$DIR/slurm.conf
SOCKET=$DIR/munge/munge.socket
PARTITION=local
# Stop order: the node daemon first, so nothing reconnects to the controller; munge (their auth) last.
DAEMONS=(slurmd slurmctld munged)

export SLURM_CONF=$CONF

die() {
    echo "local-cluster: $*" >&2
    exit 1
}

# The pid of DAEMON if the one we started is still alive; fails otherwise. Checking the process name keeps a
# recycled pid from making us signal an unrelated process.
pid_of() {
    local pid
    pid=$(cat "$DIR/$1.pid" 2>/dev/null) || return 1
    [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
    echo "$pid"
}

# Poll COMMAND for up to SECONDS; fail with MESSAGE and the tail of the daemons' logs.
wait_for() {
    local seconds=$1 message=$2 i
    shift 2
    for ((i = 0; i < seconds * 5; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    tail -n 20 "$DIR"/log/*.log >&2 || true
    die "$message (logs in $DIR/log)"
}

write_conf() {
    local user node
    user=$(id -un)
    # e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
    node=$(slurmd -C | head -n1)
    cat >"$CONF" <<EOF
# Written by slurm/local-cluster.sh: a one-node cluster under $DIR.
ClusterName=pretrain-local
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups in a container or CI machine: track job processes by parent pid, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# A node that was down (e.g. this script restarted) comes back by itself.
ReturnToService=2
# Batch jobs may be requeued: slurm/train.sbatch runs scontrol requeue on its time-limit signal.
JobRequeue=1
# Short grace between SIGTERM and SIGKILL, so cancelled test jobs go away quickly.
KillWait=5
MpiDefault=none
MailProg=/bin/true
$node State=UNKNOWN NodeAddr=127.0.0.1
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    if pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null && pid_of munged >/dev/null; then
        echo "local-cluster: already running under $DIR"
        usage
        return
    fi
    stop_daemons  # leftovers of a half-started cluster
    for tool in munged mungekey slurmctld slurmd sinfo; do
        command -v "$tool" >/dev/null || die "$tool not found; install it: apt-get install slurmctld slurmd munge"
    done
    mkdir -p "$DIR"/{munge,state,spool,log}
    chmod 711 "$DIR/munge"  # munged refuses a folder others can write to, and clients must reach the socket
    [[ -f $DIR/munge/munge.key ]] || mungekey --create --keyfile="$DIR/munge/munge.key"
    # --force: munged objects to running as root, which is how CI runs it.
    munged --force --socket="$SOCKET" --key-file="$DIR/munge/munge.key" --pid-file="$DIR/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/seed"
    write_conf
    slurmctld -f "$CONF"
    wait_for 30 "slurmctld did not answer" scontrol ping
    slurmd -f "$CONF"
    wait_for 60 "the node did not become idle" node_idle
    echo "local-cluster: started under $DIR"
    usage
}

node_idle() {
    [[ $(sinfo --noheader --partition="$PARTITION" --format=%t) == idle ]]
}

no_running_jobs() {
    [[ -z $(squeue --noheader --states=RUNNING,COMPLETING) ]]
}

exited() {
    ! kill -0 "$1" 2>/dev/null
}

usage() {
    cat <<EOF
Point Slurm's commands at it, and send jobs to its CPU-only partition:
    export SLURM_CONF=$CONF SBATCH_PARTITION=$PARTITION SBATCH_GPUS_PER_NODE=0
then e.g.  sinfo; pretrain submit configs/tiny.yaml; squeue
Logs: $DIR/log. Stop it with: $0 stop
EOF
}

stop_daemons() {
    local daemon pid
    for daemon in "${DAEMONS[@]}"; do
        pid=$(pid_of "$daemon") || continue
        kill "$pid"
        wait_for 30 "$daemon ($pid) did not exit" exited "$pid"
        rm -f "$DIR/$daemon.pid"
    done
}

stop() {
    # Jobs first: slurmstepd and the job's processes outlive slurmd otherwise.
    if pid_of slurmctld >/dev/null; then
        scancel --partition="$PARTITION"
        wait_for 30 "jobs still running" no_running_jobs
    fi
    stop_daemons
    echo "local-cluster: stopped"
}

status() {
    local daemon pid down=0
    for daemon in "${DAEMONS[@]}"; do
        if pid=$(pid_of "$daemon"); then
            echo "$daemon: running (pid $pid)"
        else
            echo "$daemon: not running"
            down=1
        fi
    done
    if ((down)); then return 3; fi
    sinfo
    usage
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
*) die "usage: $0 start|stop|status" ;;
esac
