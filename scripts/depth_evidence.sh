#!/usr/bin/env bash
# Held-out evidence for depth transfer on a CPU: at one width (64) of configs/transfer_cpu.yaml, LR sweeps of
# proxies at 2 and 4 layers and of a target at 16 layers (4x the deepest proxy, its own sweep, never fitted),
# once under model.depth_parametrization=completep and once under none (both with base_depth 2). Compares the LR
# apply-lr carries from the proxies (the 4-layer optimum) with the target's measured optimum: the miss in log2 LR
# and the loss it costs at 16 layers, and each depth's loss at its own optimum; then the coordinate checks across
# depth 2-16. Writes docs/depth_cpu.{md,txt}, docs/depth_cpu_*.json and .png, docs/coord_check_depth_*/.
# Restartable: a rerun skips finished points.
#
#   bash scripts/depth_evidence.sh [OUT [DOCS [OVERRIDE ...]]]
#
# OUT (default runs/depth_cpu) holds the sweeps, DOCS (default docs) the results; OVERRIDEs go to every run (a
# smoke test: train.steps=20). The LR grids can be set with LRS_PROXIES, LRS_COMPLETEP and LRS_NONE (the
# target's under each). One horizon, the config's 200 steps, 10% of them warmup. The grids differ on purpose:
# without CompleteP the optimum may move with depth either way, so its target grid is wider.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/depth_cpu}
docs=${2:-docs}
overrides=("${@:3}")
proxy_lrs=${LRS_PROXIES:-2^-6.5:2^-3.5:0.5}
declare -A target_lrs=([completep]=${LRS_COMPLETEP:-2^-6.5:2^-3.5:0.5} [none]=${LRS_NONE:-2^-8:2^-3:0.5})
width=64
target_depth=16

SECONDS=0
mkdir -p "$docs"
: >"$docs/depth_cpu.txt"
for p in completep none; do
    recipe=(model.depth_parametrization="$p" model.base_depth=2 "${overrides[@]}")
    pretrain sweep configs/transfer_cpu.yaml --widths "$width" --depths 2,4 --lrs "$proxy_lrs" \
        --out "$out/$p/proxies" "${recipe[@]}"
    pretrain sweep configs/transfer_cpu.yaml --widths "$width" --depths "$target_depth" --lrs "${target_lrs[$p]}" \
        --out "$out/$p/target" "${recipe[@]}"
    echo "$p sweeps done: $((SECONDS / 60)) min $((SECONDS % 60)) s"
    # The held-out run as a target config (the proxies' recipe at its depth and width), for apply-lr's LR.
    target=$out/$p/target.yaml
    printf 'base: %s\nmodel:\n  d_model: %s\n  n_layers: %s\n' "$(realpath "$out/$p/target/config.yaml")" \
        "$width" "$target_depth" >"$target"
    pretrain report "$out/$p/proxies" --target "$target" --plot "$docs/depth_cpu_$p.png" | tee -a "$docs/depth_cpu.txt"
    pretrain report "$out/$p/proxies" --target "$target" --plot "$docs/depth_cpu_$p.png" --json \
        >"$docs/depth_cpu_$p.json"
    pretrain report "$out/$p/target" --plot "$docs/depth_cpu_${p}_target.png" | tee -a "$docs/depth_cpu.txt"
    pretrain report "$out/$p/target" --plot "$docs/depth_cpu_${p}_target.png" --json >"$docs/depth_cpu_${p}_target.json"
done
sweeps=$SECONDS
for p in completep none; do
    pretrain coord-check configs/transfer_cpu.yaml --depths 2,4,8,16 --out "$docs/coord_check_depth_$p" --overwrite \
        model.d_model="$width" model.base_depth=2 model.depth_parametrization="$p" "${overrides[@]}" \
        | tee -a "$docs/depth_cpu.txt"
done
{
    echo "# Depth transfer with CompleteP on a CPU"
    echo
    echo "\`bash scripts/depth_evidence.sh\` on $(date -u +%Y-%m-%d), $(nproc --all) cores"\
         "($(lscpu | sed -n 's/^Model name: *//p')): the sweeps in $((sweeps / 60)) min $((sweeps % 60)) s, all"\
         "in $((SECONDS / 60)) min $((SECONDS % 60)) s."
    echo
    python3 scripts/depth_table.py "$docs"/depth_cpu_{completep,completep_target,none,none_target}.json
} | tee "$docs/depth_cpu.md"
