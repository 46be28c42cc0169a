#!/usr/bin/env bash
# Held-out evidence for the batch axis on a CPU: a proxy sweep of configs/transfer_cpu.yaml at width 64 over
# global batches of 8 and 16 sequences at equal tokens (with micro batches of 8, batch 8 is the config's own: 200,
# 400 and 800 steps of batch 8, half as many of batch 16), fitting the batch exponent jointly with β; then a
# target at batch 64 (4x past the largest swept batch, 200 steps: twice the tokens of the longest horizon)
# predicted by `pretrain apply-lr` and measured with its own
# LR sweep (scripts/heldout.py), against the naive reuse of the batch-16 optimum. One width: the experiment tests
# the batch, not the width, so apply-lr's width check (which needs two widths) is expected to refuse.
# Micro-batches of 8 sequences, so that batch 8 runs. Writes docs/batch_cpu.md. Restartable.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/batch_cpu}
micro=train.micro_batch_size=8

SECONDS=0
pretrain sweep configs/transfer_cpu.yaml --widths 64 --batches 8,16 --equal-tokens --steps 200,400,800 \
    --lrs 2^-7.5:2^-3.5:0.5 --out "$out/fit" "$micro"
echo "fit sweep: $((SECONDS / 60)) min $((SECONDS % 60)) s"
target=$out/b64/target.yaml
mkdir -p "$(dirname "$target")"
printf 'base: %s\nmodel:\n  d_model: 64\ntrain:\n  steps: 200\n  global_batch_size: 64\n  micro_batch_size: 8\n' \
    "$PWD/configs/transfer_cpu.yaml" >"$target"
python3 scripts/heldout.py measure "$out/fit" "$target" "$out/b64"

mkdir -p docs
pretrain report "$out/fit" --plot docs/batch_cpu.png --json >docs/batch_cpu_fit.json
{
    echo "# The batch axis on a held-out batch (CPU)"
    echo
    echo "\`bash scripts/batch_evidence.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores"\
         "($(lscpu | sed -n 's/^Model name: *//p')), in $((SECONDS / 60)) min $((SECONDS % 60)) s."
    echo "Proxies: configs/transfer_cpu.yaml at width 64, global batches 8 and 16 (× 64 tokens) at equal tokens"\
         "(200/400/800 steps of batch 8, half as many of batch 16), LRs 2^-7.5..2^-3.5 in 0.5 steps (54 runs);"\
         "the target, batch 64 at 200 steps (twice the longest horizon's tokens): its own LR sweep centred on"\
         "the prediction."
    echo
    echo '```'
    pretrain report "$out/fit" --plot docs/batch_cpu.png
    echo '```'
    echo
    python3 scripts/heldout.py table "$out/fit" "$out/b64"
} | tee docs/batch_cpu.md
