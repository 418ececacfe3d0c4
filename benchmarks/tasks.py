"""Seconds to generate each task's 10,000 fixed test canvases (vectorised composition).

python benchmarks/tasks.py
"""

from __future__ import annotations

import time

from glimpse.tasks import Task, TaskConfig

CONFIGS = [
    TaskConfig(task="translated", size=60),
    TaskConfig(task="cluttered", size=60),
    TaskConfig(task="cluttered", size=100),
    TaskConfig(task="cluttered", size=200),
]


def main() -> None:
    print("| task | canvas | distractors | test canvases | seconds |")
    print("|---|---|---|---|---|")
    for config in CONFIGS:
        task = Task(config)  # a fresh task: nothing cached
        start = time.perf_counter()
        canvases = task.fixed_canvases("test").images
        seconds = time.perf_counter() - start
        distractors = task.num_distractors
        print(f"| {config.task} | {config.canvas_size} | {distractors} | {len(canvases):,} "
              f"| {seconds:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
