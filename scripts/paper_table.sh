#!/usr/bin/env bash
# The paper's ablation table on our stack: every row of pretrain/transfer/paper_table.py (each ablation config of
# configs/ablations/, the baseline, full SP, and a 4x larger and a 4x smaller batch at equal tokens) swept by
# `pretrain sweep` on configs/transfer_cpu.yaml at widths 32, 64, 128 and 256 (8x), 9 LRs each, then
# docs/paper_table.{md,png} and pretrain/transfer/paper_table.json (what apply-lr cites) written from their
# reports. Restartable: a rerun trains only the points a sweep lacks, and rewrites the table from what is there.
# Options after OUT go to scripts/paper_table.py (--rows, --widths, --points, --steps, --extend, --docs,
# --results, then `-- key=value` overrides for every sweep), e.g. a smoke run:
#   bash scripts/paper_table.sh /tmp/pt --rows baseline,lion --widths 32,64 --points 2 --steps 4 --extend 0 \
#       --docs /tmp/pt/docs --results /tmp/pt/paper_table.json
# Rows run side by side, one per core, each run on one thread (--jobs). Each row's output goes to OUT/ROW.log.
# Cost of the full table: 17 rows x 4 widths x 9 LRs = 612 runs, plus 8 per grid extension. One run on one
# thread, measured on the project's 2-core CPU machine with its other core busy: 8.8 s at width 32, 12.1 s at 64,
# 19.4 s at 128, 46.7 s at 256 (the 4x smaller batch's 800 steps: 11.2 s at 32, 59.9 s at 256), so about 13 min
# per row and 3.8 h of runs in all: about 2 h of wall time with two rows side by side on 2 idle cores, 4 h on one.
# (Two threads per run on a core already busy ran 8x slower, hence one.) docs/paper_table.md states what the
# measured table took.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/paper_table}
shift || true

SECONDS=0
python3 scripts/paper_table.py "$out" "$@"
echo "paper table: $((SECONDS / 3600)) h $((SECONDS % 3600 / 60)) min $((SECONDS % 60)) s wall on $(nproc) cores"
