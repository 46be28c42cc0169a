#!/usr/bin/env bash
# How the warmup rule along a horizon ladder moves the fitted horizon exponent β, on a CPU: two μP sweeps of
# configs/transfer_cpu.yaml, identical but for the warmup: 20 steps at every horizon (10% of a 200-step run,
# 20% of a 100-step one, 5% of a 400-step one) against 10% of each horizon's steps (what a sweep now sets by
# default). Widths 32 and 64, 100/200/400 steps, LRs 2^-7..2^-3 in 0.5 steps: 54 runs per sweep. Writes
# docs/warmup_shape_cpu.md and docs/warmup_shape_cpu_{fixed,fraction}.json. Restartable: a rerun skips finished points.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/warmup_shape_cpu}
grid=(--widths "32,64" --lrs "2^-7:2^-3:0.5" --steps "100,200,400")

SECONDS=0
pretrain sweep configs/transfer_cpu.yaml "${grid[@]}" --fixed-warmup --out "$out/fixed" \
    optim.warmup_steps=20 optim.warmup_fraction=null
echo "fixed-steps sweep: $((SECONDS / 60)) min $((SECONDS % 60)) s"
pretrain sweep configs/transfer_cpu.yaml "${grid[@]}" --out "$out/fraction" \
    optim.warmup_steps=20 optim.warmup_fraction=0.1
echo "both sweeps: $((SECONDS / 60)) min $((SECONDS % 60)) s"

mkdir -p docs
for rule in fixed fraction; do
    pretrain report "$out/$rule" --plot "$out/$rule.png" --json >"$out/$rule.json"
    cp "$out/$rule.json" "docs/warmup_shape_cpu_$rule.json"
done
{
    echo "# Warmup shape along a horizon ladder and the fitted β (CPU)"
    echo
    echo "\`bash scripts/warmup_shape_evidence.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores"\
         "($(lscpu | sed -n 's/^Model name: *//p')), in $((SECONDS / 60)) min $((SECONDS % 60)) s."
    echo
    python3 scripts/warmup_shape_table.py "$out/fixed.json" "$out/fraction.json"
} | tee docs/warmup_shape_cpu.md
