#!/usr/bin/env bash
# Held-out evidence for depth transfer on a CPU: at one width (64) of configs/transfer_cpu.yaml, LR sweeps of
# proxies at 2 and 4 layers and of targets at 16 and 32 layers (4x and 8x the deepest proxy, each its own sweep,
# never fitted), once under model.depth_parametrization=completep and once under none (both with base_depth 2).
# Compares the LR apply-lr carries from the proxies (the 4-layer optimum) with each target's measured optimum: the
# miss in log2 LR and the loss it costs at the target, and each depth's loss at its own optimum; then the
# coordinate checks across depth 2-16. Writes docs/depth_cpu.{md,txt}, docs/depth_cpu_*.json and .png,
# docs/coord_check_depth_*/.
# Restartable: a rerun skips finished points.
#
#   bash scripts/depth_evidence.sh [OUT [DOCS [OVERRIDE ...]]]
#
# OUT (default runs/depth_cpu) holds the sweeps, DOCS (default docs) the results; OVERRIDEs go to every run (a
# smoke test: train.steps=20). The LR grids can be set with LRS_PROXIES, LRS_COMPLETEP and LRS_NONE (the
# targets' under each), the target depths with TARGET_DEPTHS (default "16 32"). One horizon, the config's 200
# steps, 10% of them warmup. The grids differ on purpose: without CompleteP the optimum may move with depth either
# way, so its target grid is wider.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/depth_cpu}
docs=${2:-docs}
overrides=("${@:3}")
proxy_lrs=${LRS_PROXIES:-2^-6.5:2^-3.5:0.5}
declare -A target_lrs=([completep]=${LRS_COMPLETEP:-2^-6.5:2^-3.5:0.5} [none]=${LRS_NONE:-2^-8:2^-3:0.5})
width=64
read -ra target_depths <<<"${TARGET_DEPTHS:-16 32}"

SECONDS=0
mkdir -p "$docs"
: >"$docs/depth_cpu.txt"
for p in completep none; do
    recipe=(model.depth_parametrization="$p" model.base_depth=2 "${overrides[@]}")
    pretrain sweep configs/transfer_cpu.yaml --widths "$width" --depths 2,4 --lrs "$proxy_lrs" \
        --out "$out/$p/proxies" "${recipe[@]}"
    for depth in "${target_depths[@]}"; do
        pretrain sweep configs/transfer_cpu.yaml --widths "$width" --depths "$depth" --lrs "${target_lrs[$p]}" \
            --out "$out/$p/target_L$depth" "${recipe[@]}"
        echo "$p sweeps to $depth layers done: $((SECONDS / 60)) min $((SECONDS % 60)) s"
        # The held-out run as a target config (the proxies' recipe at its depth and width), for apply-lr's LR.
        target=$out/$p/target_L$depth.yaml
        printf 'base: %s\nmodel:\n  d_model: %s\n  n_layers: %s\n' \
            "$(realpath "$out/$p/target_L$depth/config.yaml")" "$width" "$depth" >"$target"
        name=depth_cpu_${p}_L$depth
        pretrain report "$out/$p/proxies" --target "$target" --plot "$docs/$name.png" | tee -a "$docs/depth_cpu.txt"
        pretrain report "$out/$p/proxies" --target "$target" --json >"$docs/$name.json"
        pretrain report "$out/$p/target_L$depth" --plot "$docs/${name}_target.png" | tee -a "$docs/depth_cpu.txt"
        pretrain report "$out/$p/target_L$depth" --json >"$docs/${name}_target.json"
    done
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
    python3 scripts/depth_table.py "$docs" "${target_depths[@]}"
} | tee "$docs/depth_cpu.md"
