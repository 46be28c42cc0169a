#!/usr/bin/env bash
# Refresh constraints.txt, the exact versions of the whole dependency closure as tested: scripts/test.sh in a new
# virtualenv with the newest versions setup.py allows (PRETRAIN_CONSTRAINTS empty), the whole suite run there,
# and only if it passes, that virtualenv's versions written. Arguments go to pytest. Run it where CI runs:
# constraints.txt records the Python and platform it was resolved on.
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
PRETRAIN_VENV=$scratch/venv PRETRAIN_CONSTRAINTS='' bash scripts/test.sh "$@"

python=$scratch/venv/bin/python3
{
    echo "# The exact versions of the whole dependency closure that the test suite passed with, written by"
    echo "# scripts/lock.sh on $(date -u +%F) ($("$python" -c 'import platform as p; print(p.python_implementation(), p.python_version(), p.system(), p.machine())'))."
    echo "# Install with it: pip install -c constraints.txt ...  torch's version is pinned, its build (CPU or a CUDA"
    echo "# version) is the machine's choice."
    "$python" -m pip freeze --all --exclude-editable | grep -v '^pip==' | sed -E 's/\+[A-Za-z0-9.]+$//'
} >"$scratch/constraints.txt"
mv "$scratch/constraints.txt" constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages)"
