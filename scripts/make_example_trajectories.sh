#!/usr/bin/env bash
# Rebuild data/examples/: the small trajectory files that notebook 05 and the inspector open.
#
#   scripts/make_example_trajectories.sh          # about 40 s on 2 CPU cores
#
# Teacher episodes under mem1 and full at N = 2 and N = 4 (same seed and split, so the same tasks:
# the inspector shows each task under both agents side by side), and episodes of the untrained tiny
# model (it writes garbage: format errors). Trained-model examples go beside them; the notebook
# picks up every *.jsonl in the folder. Deterministic for a given seed.
set -euo pipefail
cd "$(dirname "$0")/.."
MEM1=${MEM1:-.venv/bin/mem1}
OUT=${OUT:-data/examples}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
for n in 2 4; do
  for agent in mem1 full; do
    "$MEM1" rollout --policy teacher --agent "$agent" --objectives "$n" --episodes 3 --seed 0 \
      --split dev --out "$OUT/teacher-$agent-n$n.jsonl"
  done
done
"$MEM1" rollout --policy tiny --agent mem1 --objectives 2 --episodes 2 --seed 0 --split dev \
  --out "$OUT/tiny-untrained-mem1-n2.jsonl"
# The headline picture (README, docs/inspector.png): one N = 16 task of the test split played by the
# headline model under mem1 (greedy) and by the teacher under full context, the same task.
if [ -d data/checkpoints/sft-mem1-n16-hop2 ]; then
  "$MEM1" rollout --policy sft-n16-hop2 --agent mem1 --objectives 16 --episodes 1 --seed 0 --split test \
    --temperature 0 --out "$OUT/sft-n16-hop2-mem1-n16.jsonl"
  "$MEM1" rollout --policy teacher --agent full --objectives 16 --episodes 1 --seed 0 --split test \
    --out "$OUT/teacher-full-n16.jsonl"
fi
# Trained models, where their checkpoints are here: the same dev tasks (N = 2, 4) as the teacher's,
# greedy as in mem1 eval, so the inspector lines each up with the teacher's episode of the same task.
CK=data/checkpoints
for spec in "sft-mem1 mem1" "ppo-mem1 mem1" "sft-full full" "ppo-full full"; do
  set -- $spec
  [ -d "$CK/$1" ] || continue
  for n in 2 4; do
    "$MEM1" rollout --policy "$CK/$1" --agent "$2" --objectives "$n" --episodes 3 --seed 0 --split dev --temperature 0 \
      --out "$OUT/$1-$2-n$n.jsonl"
  done
done
du -ch "$OUT"/*.jsonl | tail -1
