"""`mem1 world --check` and `mem1 webshop --check`: load a stored data set, verify every file
against its manifest, and print its figures, how well search finds what a task needs, and samples.
"""

from __future__ import annotations

import time
from pathlib import Path

from .retrieval import retrieval_recall
from .webshop import catalogue_statistics, load_catalogue
from .webshop_env import Shop
from .webshop_teacher import search_recall
from .world import load_world, make_tasks, world_statistics


def check_world(path: Path, samples: int = 3) -> dict:
    """Load (and verify) the world, print its statistics, retrieval figures and a few tasks."""
    t0 = time.perf_counter()
    world = load_world(path)
    load_s = time.perf_counter() - t0
    stats = world_statistics(world)
    print(f"world {path} (seed {world.config.seed}), loaded and verified in {load_s:.1f} s")
    for key, value in stats.items():
        print(f"  {key:32s} {value}")
    recall = retrieval_recall(world, "dev")
    print(
        f"retrieval on dev ({recall['hops']} hops, canonical queries): "
        f"recall@1 {recall['recall@1']:.3f}  recall@3 {recall['recall@3']:.3f}  "
        f"index build {recall['index_seconds']:.2f} s  query {recall['query_ms']:.3f} ms"
    )
    for n in (1, 2):
        for task in make_tasks(world, "dev", n, samples, seed=0)[: 1 if n == 1 else samples - 1]:
            print(f"sample task {task.id}:")
            for i, (q, a) in enumerate(zip(task.questions, task.answers), 1):
                print(f"  {i}. {q}  ->  {a}")
    return stats | {f"dev_{k}": v for k, v in recall.items()}


def check_webshop(path: Path, samples: int = 3) -> dict:
    """Load (and verify) the catalogue, print its statistics, search figures and a few goals."""
    t0 = time.perf_counter()
    catalogue = load_catalogue(path)
    seconds = time.perf_counter() - t0
    print(f"catalogue {path} (seed {catalogue.config.seed}), loaded and verified in {seconds:.1f} s")
    stats = catalogue_statistics(catalogue)
    for key, value in stats.items():
        print(f"  {key:32s} {value}")
    recall = search_recall(Shop(catalogue), catalogue.goals["dev"][:300])
    print("search on dev (the teacher's query): " + "  ".join(f"{k} {v:.3f}" for k, v in recall.items()))
    for goal in catalogue.goals["dev"][:samples]:
        print(f"sample goal {goal.id}: {goal.instruction}\n  -> {goal.summary()}")
    return stats | {f"dev_{k}": v for k, v in recall.items()}
