#!/usr/bin/env bash
# The μ-transfer evidence on a CPU: LR sweeps of configs/transfer_cpu.yaml under μP and under SP over an 8x
# width range (32 -> 256), one report of both (docs/transfer_cpu.{txt,json,png}), and the coordinate checks
# (docs/coord_check_{mup,sp}/). Restartable: a rerun skips finished points. About 20 minutes on 2 idle cores.
# One horizon, the config's 200 steps, of which its optim.warmup_fraction 0.1 warms up 20.
#
# The grids differ on purpose: μP needs resolution around its optimum (the claim is that it moves by at most
# 0.5 log2), SP needs range (its optimum falls by about 1 log2 per doubling of width).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/transfer_cpu}
widths=32,64,128,256

SECONDS=0
pretrain sweep configs/transfer_cpu.yaml --widths "$widths" --lrs 2^-6.5:2^-3:0.5 --out "$out/mup"
pretrain sweep configs/transfer_cpu.yaml --widths "$widths" --lrs 2^-9:2^-3:1 --parametrization sp --out "$out/sp"
echo "sweeps: $((SECONDS / 60)) min $((SECONDS % 60)) s"

mkdir -p docs
pretrain report "$out/mup" "$out/sp" --plot docs/transfer_cpu.png | tee docs/transfer_cpu.txt
pretrain report "$out/mup" "$out/sp" --plot docs/transfer_cpu.png --json > docs/transfer_cpu.json
for p in mup sp; do
    pretrain coord-check configs/transfer_cpu.yaml --widths "$widths" --parametrization $p --out docs/coord_check_$p
done
