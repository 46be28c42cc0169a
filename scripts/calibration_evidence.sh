#!/usr/bin/env bash
# Held-out calibration of the transferred LR's 80% interval on a CPU: a proxy sweep of configs/transfer_cpu.yaml
# at widths 64 and 128 over 100, 200 and 400 steps, then five targets the sweep never ran (other widths, and
# horizons up to 8x past the longest proxy), each predicted by `pretrain apply-lr` (its interval pooling the
# seed-noise prior of scripts/seed_noise.sh) and then measured with its own LR sweep (scripts/heldout.py).
# Writes docs/calibration_cpu.md. Restartable: a rerun skips finished points.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/calibration_cpu}
targets=(96:800 192:600 128:1200 96:1600 96:3200)  # width:steps, cheapest first

SECONDS=0
pretrain sweep configs/transfer_cpu.yaml --widths 64,128 --lrs 2^-7:2^-3:0.5 --steps 100,200,400 --out "$out/fit"
echo "fit sweep: $((SECONDS / 60)) min $((SECONDS % 60)) s"
measured=()
for target in "${targets[@]}"; do
    width=${target%:*} steps=${target#*:}
    dir=$out/w$width-s$steps
    mkdir -p "$dir"
    printf 'base: %s\nmodel:\n  d_model: %s\ntrain:\n  steps: %s\n  global_batch_size: 16\n' \
        "$PWD/configs/transfer_cpu.yaml" "$width" "$steps" >"$dir/target.yaml"
    python3 scripts/heldout.py measure "$out/fit" "$dir/target.yaml" "$dir"
    measured+=("$dir")
    echo "width $width, $steps steps: $((SECONDS / 60)) min $((SECONDS % 60)) s"
done

mkdir -p docs
pretrain report "$out/fit" --json >docs/calibration_cpu_fit.json
{
    echo "# Calibration of the transferred LR's interval on held-out targets (CPU)"
    echo
    echo "\`bash scripts/calibration_evidence.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores"\
         "($(lscpu | sed -n 's/^Model name: *//p')), in $((SECONDS / 60)) min $((SECONDS % 60)) s."
    echo "Proxies: configs/transfer_cpu.yaml at widths 64 and 128, 100/200/400 steps of 16 × 64 tokens, LRs"\
         "2^-7..2^-3 in 0.5 steps (54 runs); every target: its own LR sweep centred on the prediction."
    echo
    echo '```'
    pretrain report "$out/fit"
    echo '```'
    echo
    python3 scripts/heldout.py table "$out/fit" "${measured[@]}"
} | tee docs/calibration_cpu.md
