#!/usr/bin/env bash
# The test suite from nothing: a new virtualenv, what the tests need installed into it at the tested versions,
# then the tests. Arguments go to pytest (e.g. `bash scripts/test.sh -m "not slow"` for the fast tier).
#
# Python: the virtualenv is .venv-test/ (PRETRAIN_VENV), recreated on every run so that a missing or drifting
# install step fails here, not for a user. Into it: the CPU build of torch first (a bare `torch` requirement
# would pull a multi-GB CUDA build; on a GPU machine set PRETRAIN_TORCH to the build for your CUDA), then the
# project with its dev extras, every version pinned by constraints.txt (PRETRAIN_CONSTRAINTS: another file, e.g.
# constraints-floor.txt, or empty to resolve the newest versions setup.py allows, as scripts/lock.sh does).
# System: the Slurm daemons, munge and shellcheck, which tests/test_tools_slurm.py uses to start a two-node
# cluster on this machine, and Debian's venv module if Python lacks it. They are installed with apt-get where
# they are missing and this runs as root; otherwise the Slurm tests are skipped with the reason
# (PRETRAIN_REQUIRE_SLURM=1 makes them fail instead, as CI does).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${PRETRAIN_VENV:-.venv-test}
constraints=${PRETRAIN_CONSTRAINTS-constraints.txt}
torch=${PRETRAIN_TORCH:-torch==2.13.0}

apt_install() {
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "installing $* with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    else
        return 1
    fi
}

if ! python3 -m venv --clear "$venv" 2>/dev/null; then
    apt_install python3-venv || { echo "python3 -m venv failed and python3-venv cannot be installed" >&2; exit 1; }
    python3 -m venv --clear "$venv"
fi
# shellcheck source=/dev/null
source "$venv/bin/activate"
pin=()
[[ -n $constraints ]] && pin=(--constraint "$constraints")
start=$SECONDS
python3 -m pip install --quiet "${pin[@]}" "$torch"
python3 -m pip install --quiet "${pin[@]}" -e ".[dev]"
echo "installed into $venv in $((SECONDS - start)) s (${constraints:-newest allowed versions})"

missing=()
for tool in slurmctld slurmd munged sbatch shellcheck; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})) && ! apt_install slurmctld slurmd slurm-client munge shellcheck; then
    echo "cannot install ${missing[*]} (needs root and apt-get): tests/test_tools_slurm.py will be skipped" >&2
fi

exec python3 -m pytest -q "$@"
