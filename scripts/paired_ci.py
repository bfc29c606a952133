"""EM per objective of two trajectory files of the same tasks, and the paired bootstrap interval
of the difference (B - A), e.g. a mem1 model against the full-context baseline at N = 16:

    mem1 eval --policy sft-n16 --agents mem1 --objectives 16 --trajectories runs/traj
    mem1 eval --policy ppo-full --agents full --objectives 16 --trajectories runs/traj
    python scripts/paired_ci.py runs/traj/ppo-full-full-n16.jsonl runs/traj/sft-n16-mem1-n16.jsonl
"""

import sys

from mem1lite.metrics import paired_bootstrap
from mem1lite.trajectory import read_jsonl


def per_task(path: str) -> dict[str, float]:
    report = read_jsonl(path, strict=True)
    return {t.task_id: t.em / t.objectives for t in report.trajectories}


def main(a_path: str, b_path: str) -> None:
    a, b = per_task(a_path), per_task(b_path)
    if set(a) != set(b):
        sys.exit(f"paired_ci: {a_path} and {b_path} hold different tasks")
    tasks = sorted(a)
    ci = paired_bootstrap([a[t] for t in tasks], [b[t] for t in tasks])
    mean_a, mean_b = sum(a.values()) / len(a), sum(b.values()) / len(b)
    print(f"A {a_path}: {mean_a:.3f}   B {b_path}: {mean_b:.3f}   ({len(tasks)} tasks)")
    print(f"B - A = {ci['diff']:+.3f}, 95% CI [{ci['low']:+.3f}, {ci['high']:+.3f}]")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/paired_ci.py A.jsonl B.jsonl")
    main(sys.argv[1], sys.argv[2])
