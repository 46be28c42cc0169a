#!/usr/bin/env bash
# The test suite from nothing: install what the tests need, then run them. Arguments go to pytest
# (e.g. `bash scripts/test.sh -m "not slow"` for the fast tier).
#
# Python: the CPU build of torch first (a bare `torch` requirement would pull a multi-GB CUDA build; on a GPU
# machine, install the torch build for your CUDA before running this), then the project with its dev extras.
# System: the Slurm daemons, munge and shellcheck, which tests/test_tools_slurm.py uses to start a two-node
# cluster on this machine. They are installed with apt-get where they are missing and this runs as root;
# otherwise those tests are skipped with the reason (PRETRAIN_REQUIRE_SLURM=1 makes them fail instead, as CI does).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet torch==2.13.0
python3 -m pip install --quiet -e ".[dev]"

missing=()
for tool in slurmctld slurmd munged sbatch shellcheck; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "installing ${missing[*]} with apt-get (for tests/test_tools_slurm.py)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            slurmctld slurmd slurm-client munge shellcheck >/dev/null
    else
        echo "cannot install ${missing[*]} (needs root and apt-get): tests/test_tools_slurm.py will be skipped" >&2
    fi
fi

exec python3 -m pytest -q "$@"
