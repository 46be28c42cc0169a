#!/usr/bin/env bash
# Held-out evidence for the horizon axis on a CPU: fit how the μP optimum moves with the training horizon on
# configs/transfer_cpu.yaml (widths 32-256 at 100, 200 and 400 steps), predict the optimum at 1600 steps (4x
# past the longest fitted horizon) for the widest width, then measure it there with its own LR sweep, and
# compare prediction, measurement, and the naive reuse of the 400-step optimum (docs/horizon_cpu.*).
# Restartable: a rerun skips finished points. The warmup is transfer_cpu.yaml's optim.warmup_fraction, 10% of
# every run (10, 20 and 40 steps; 160 at the held-out horizon), so the schedule has one shape at every horizon.
# (The docs/horizon_cpu.* in the repository were measured before, with 20 warmup steps at every horizon.)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/horizon_cpu}
widths=32,64,128,256
heldout_width=256
heldout_steps=1600

SECONDS=0
pretrain sweep configs/transfer_cpu.yaml --widths "$widths" --lrs 2^-6.5:2^-3:0.5 --steps 100,200,400 \
    --out "$out/fit"
echo "fit sweep: $((SECONDS / 60)) min $((SECONDS % 60)) s"
pretrain sweep configs/transfer_cpu.yaml --widths "$heldout_width" --lrs 2^-7.5:2^-4:0.5 --steps "$heldout_steps" \
    --out "$out/heldout"
echo "both sweeps: $((SECONDS / 60)) min $((SECONDS % 60)) s"

# The held-out run as a target config, for the fit's extrapolation.
target=$out/heldout-target.yaml
printf 'base: %s\nmodel:\n  d_model: %s\ntrain:\n  steps: %s\n' \
    "$PWD/configs/transfer_cpu.yaml" "$heldout_width" "$heldout_steps" >"$target"

mkdir -p docs
pretrain report "$out/fit" --target "$target" --plot docs/horizon_cpu.png | tee docs/horizon_cpu.txt
pretrain report "$out/fit" --target "$target" --plot docs/horizon_cpu.png --json >docs/horizon_cpu.json
pretrain report "$out/heldout" --plot docs/horizon_cpu_heldout.png | tee -a docs/horizon_cpu.txt
pretrain report "$out/heldout" --plot docs/horizon_cpu_heldout.png --json >docs/horizon_cpu_heldout.json
python3 scripts/horizon_table.py docs/horizon_cpu.json docs/horizon_cpu_heldout.json "$heldout_width" \
    | tee docs/horizon_cpu.md
echo "total: $((SECONDS / 60)) min $((SECONDS % 60)) s"
