#!/usr/bin/env bash
# How far the fitted optimum of one LR sweep scatters between seeds (init and data order), on the CPU proxy of
# scripts/calibration_evidence.sh: configs/transfer_cpu.yaml at widths 64 and 128, 200 steps, LRs 2^-7..2^-3 in
# 0.5 steps, once per seed. The pooled seed-to-seed σ and its dof are the noise prior of every transferred LR's
# interval (pretrain/transfer/seed_noise.json, read by pretrain/transfer/fit.py). Writes docs/seed_noise_cpu.md.
# Restartable: a rerun skips finished points.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/seed_noise}
seeds=(0 1 2 3)

SECONDS=0
for seed in "${seeds[@]}"; do
    pretrain sweep configs/transfer_cpu.yaml --widths 64,128 --lrs 2^-7:2^-3:0.5 --steps 200 \
        "train.seed=$seed" --out "$out/seed$seed"
    echo "seed $seed: $((SECONDS / 60)) min $((SECONDS % 60)) s"
done
sweeps=()
for seed in "${seeds[@]}"; do sweeps+=("$out/seed$seed"); done
{
    echo "# Seed-to-seed scatter of the fitted optimum LR (CPU)"
    echo
    echo "\`bash scripts/seed_noise.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores"\
         "($(lscpu | sed -n 's/^Model name: *//p')), in $((SECONDS / 60)) min $((SECONDS % 60)) s."
    echo "configs/transfer_cpu.yaml at widths 64 and 128, 200 steps of 16 × 64 tokens, LRs 2^-7..2^-3 in 0.5"\
         "steps, seeds ${seeds[*]} (train.seed: init and data order): $((${#seeds[@]} * 18)) runs."
    echo
    python3 scripts/seed_noise.py pretrain/transfer/seed_noise.json "${sweeps[@]}"
} | tee docs/seed_noise_cpu.md
