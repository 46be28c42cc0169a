#!/usr/bin/env bash
# A Slurm cluster on this one machine, for the tests and for trying slurm/*.sbatch without a real cluster.
#
#   slurm/local-cluster.sh start|stop|status
#
# Starts munged, slurmctld and one slurmd per node directly (no systemd), with the config, state, spool,
# pid files and logs all under one folder, and stops exactly the daemons whose pid files are there. Jobs run
# as the calling user. The nodes share the machine's real CPUs and memory (`slurmd -C`) between them.
#
#   PRETRAIN_SLURM_DIR    the folder (default /tmp/pretrain-slurm)
#   PRETRAIN_SLURM_NODES  how many nodes (default 1); 2 runs train.sbatch's multi-node path for real
#   PRETRAIN_SLURM_PORT   slurmctld's port; the slurmds listen on the next ones (default 6817)
#
# Needs Debian's slurmctld, slurmd and munge packages (apt-get install slurmctld slurmd munge).
set -euo pipefail

DIR=${PRETRAIN_SLURM_DIR:-/tmp/pretrain-slurm}
NODES=${PRETRAIN_SLURM_NODES:-1}
PORT=${PRETRAIN_SLURM_PORT:-6817}
CONF=$DIR/slurm.conf
SOCKET=$DIR/munge/munge.socket
PARTITION=local

export SLURM_CONF=$CONF

die() {
    echo "local-cluster: $*" >&2
    exit 1
}

# Node I is named 127.0.0.I: a loopback address is a name that resolves on any machine, and train.sbatch
# needs the first node's name to resolve (it is MASTER_ADDR).
node_name() {
    echo "127.0.0.$1"
}

# The pid in PIDFILE if that process is still the daemon COMMAND we started; fails otherwise. Checking the
# name keeps a recycled pid from making us signal an unrelated process.
pid_of() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 1
    echo "$pid"
}

# "PIDFILE COMMAND" per daemon, in stop order: the nodes first (so nothing reconnects to the controller),
# munge (everyone's authentication) last.
daemons() {
    local file
    for file in "$DIR"/slurmd-*.pid; do
        if [[ -e $file ]]; then echo "$file slurmd"; fi
    done
    echo "$DIR/slurmctld.pid slurmctld"
    echo "$DIR/munged.pid munged"
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
    local user hardware cpus memory i
    user=$(id -un)
    hardware=$(slurmd -C | head -n1)  # "NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105"
    [[ $hardware =~ CPUs=([0-9]+).*RealMemory=([0-9]+) ]] || die "cannot read slurmd -C: $hardware"
    cpus=$((BASH_REMATCH[1] / NODES))
    memory=$((BASH_REMATCH[2] / NODES))
    ((cpus >= 1)) || die "$NODES nodes need at least $NODES CPUs ($hardware)"
    cat >"$CONF" <<EOF
# Written by slurm/local-cluster.sh: $NODES node(s) on this machine, everything under $DIR.
ClusterName=pretrain-local
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$PORT
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
# No cgroups in a container or CI machine: track job processes by parent pid, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# A node that was down (e.g. this script restarted) comes back by itself.
ReturnToService=2
# Batch jobs may be requeued: slurm/train.sbatch runs scontrol requeue on its time-limit signal.
JobRequeue=1
# Short grace between SIGTERM and SIGKILL, and a scheduler pass every 2 s (default 60 s) for jobs that
# become eligible by time, such as a requeued one: tests wait on them.
KillWait=5
SchedulerParameters=sched_interval=2
MpiDefault=none
MailProg=/bin/true
EOF
    for ((i = 1; i <= NODES; i++)); do
        echo "NodeName=$(node_name "$i") NodeAddr=$(node_name "$i") Port=$((PORT + i))" \
            "CPUs=$cpus RealMemory=$memory State=UNKNOWN" >>"$CONF"
    done
    echo "PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >>"$CONF"
}

start() {
    if all_running; then
        echo "local-cluster: already running under $DIR"
        usage
        return
    fi
    [[ -z $(running) ]] || die "some daemons are running under $DIR, some not; run $0 stop first"
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
    for ((i = 1; i <= NODES; i++)); do
        mkdir -p "$DIR/spool/$(node_name "$i")"
        slurmd -f "$CONF" -N "$(node_name "$i")"
    done
    wait_for 60 "the nodes did not become idle" nodes_idle
    echo "local-cluster: started $NODES node(s) under $DIR"
    usage
}

nodes_idle() {
    [[ $(sinfo --noheader --partition="$PARTITION" --format=%t) == idle ]]
}

no_running_jobs() {
    [[ -z $(squeue --noheader --states=RUNNING,COMPLETING) ]]
}

exited() {
    ! kill -0 "$1" 2>/dev/null
}

# The daemons of this folder that are alive, one "NAME PID" per line.
running() {
    local file name pid
    while read -r file name; do
        if pid=$(pid_of "$file" "$name"); then echo "$(basename "$file" .pid) $pid"; fi
    done < <(daemons)
}

all_running() {
    local alive
    alive=$(running)
    [[ -n $alive && $(wc -l <<<"$alive") -eq $(daemons | wc -l) ]]
}

usage() {
    cat <<EOF
Point Slurm's commands at it, and send jobs to its CPU-only partition:
    export SLURM_CONF=$CONF SBATCH_PARTITION=$PARTITION SBATCH_GPUS_PER_NODE=0
then e.g.  sinfo; pretrain submit configs/tiny.yaml [-- --nodes=N]; squeue
Logs: $DIR/log. Stop it with: $0 stop
EOF
}

stop() {
    local file name pid
    # Jobs first: slurmstepd and the job's processes outlive slurmd otherwise.
    if pid_of "$DIR/slurmctld.pid" slurmctld >/dev/null; then
        scancel --partition="$PARTITION"
        wait_for 30 "jobs still running" no_running_jobs
    fi
    while read -r file name; do
        pid=$(pid_of "$file" "$name") || continue
        kill "$pid"
        wait_for 30 "$name ($pid) did not exit" exited "$pid"
        rm -f "$file"
    done < <(daemons)
    echo "local-cluster: stopped"
}

status() {
    local alive
    alive=$(running)
    echo "${alive:-no daemons running under $DIR}"
    all_running || return 3
    sinfo
    usage
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
*) die "usage: $0 start|stop|status" ;;
esac
