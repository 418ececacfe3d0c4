"""Inference latency per image: RAM as deployed against the full-view models, batch 1 and 256.

Each model runs from canvases already in memory to its answers: RAM through
:class:`glimpse.agents.ram.RAMPredictor` (8 glimpses read from the sensor's tables or, at batch
1 on canvases over 140 px with 4 scales, from the canvases' own pixels; the networks; no
environment), the full-view baselines through one forward pass. Untrained models with the
sizes of the comparison's recipes (time does not depend on the weights). The models are timed
in turn, round after round, and each figure is the median over the rounds, so a change in the
machine's load falls on all of them. Cluttered canvases, 8 glimpses of 12 x 12 (3 scales at
60 px, 4 beyond). Also prints RAM through the environment (``RAMPolicy`` stepping
``GlimpseEpisodes``), the path the training harness uses.

    python benchmarks/latency.py                       # 60, 100, 200 and 400 px; 1 thread
    python benchmarks/latency.py --sizes 100 --threads 2 --batches 1
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch

from glimpse.agents import cost
from glimpse.agents.baselines import BaselineConfig
from glimpse.agents.bptt import cpu_name
from glimpse.agents.ram import RAMPolicy
from glimpse.agents.recipes import recipe
from glimpse.envs.glimpse_env import make_episodes

FULL_VIEW = {  # the comparison's recipes at 100 px give each baseline's sizes
    "soft attention": ("soft", "compare-clutteredmnist100-soft"),
    "CNN, 6 layers": ("deep-cnn", "compare-clutteredmnist100-deep-cnn"),
    "CNN, 2 layers": ("cnn", "compare-clutteredmnist100-cnn"),
    "FC, 2 layers": ("fc", "compare-clutteredmnist100-fc"),
}


def settings_at(size: int) -> dict:
    return {"task": "cluttered", "size": size, "glimpse_size": 12, "scale_factor": 2,
            "num_scales": 3 if size == 60 else 4, "glimpses": 8}  # fmt: skip


def through_environment(settings: dict, batch: int) -> Callable[[], object]:
    """RAM's episode stepped through the batched environment (fresh canvases included)."""
    predictor, _ = cost.ram_predictor(settings)
    episodes = make_episodes(batch, "train", False, {**settings, "action_type": "continuous"})
    episodes.seed(np.arange(batch, dtype=np.uint64))
    policy = RAMPolicy(predictor.model, predictor.glimpses, torch.device("cpu"))
    everyone = np.ones(batch, bool)

    def episode() -> None:
        episodes.reset(everyone)
        policy.start(batch)
        for _ in range(predictor.glimpses):
            episodes.step(policy.act(episodes.observations()))

    return episode


def candidates(size: int, batch: int) -> dict[str, Callable[[], object]]:
    settings = settings_at(size)
    predictor, task = cost.ram_predictor(settings)
    canvases = cost.canvases_of(task, batch)
    runs: dict[str, Callable[[], object]] = {"RAM": lambda: predictor.predict(canvases)}
    for label, (agent, name) in FULL_VIEW.items():
        model_settings = recipe(name).layer().get("model", {})
        config = BaselineConfig(**{"attention_steps": 8, **model_settings})
        _, model = cost.baseline_model(agent, settings, config)
        runs[label] = lambda m=model: m(torch.from_numpy(canvases).float().div_(255.0))
    runs["RAM through the environment"] = through_environment(settings, batch)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[60, 100, 200, 400])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--seconds", type=float, default=5.0, help="per size, batch and threads")
    args = parser.parse_args()
    names = ["RAM", *FULL_VIEW, "RAM through the environment"]
    print(f"CPU: {cpu_name()}; torch {torch.__version__}; ms per image, medians")
    print(f"| canvas | threads | batch | {' | '.join(names)} | soft / RAM | CNN 6 / RAM |")
    print("|---" * (len(names) + 5) + "|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for size in args.sizes:
            for batch in args.batches:
                ms = cost.latency_ms(candidates(size, batch), batch, args.seconds)
                cells = " | ".join(f"{ms[name]:.3f}" for name in names)
                soft, cnn = ms["soft attention"] / ms["RAM"], ms["CNN, 6 layers"] / ms["RAM"]
                print(f"| {size} | {threads} | {batch} | {cells} | {soft:.1f} | {cnn:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
