"""Is a trained RAM held back by where it looks, or by what it makes of what it sees?

1. The test error split by how many of an episode's glimpses had their finest patch on the
   digit (its box, as ``glimpse eval`` counts them): if the episodes that never looked at the
   digit hold most of the errors, finding the digit is what limits the model; if the errors
   are spread over episodes that looked at it, reading it is.
2. The error on training images with the evaluation policy (mean locations), next to the test
   error: if they are close, the model does not even fit its training set.
3. Then it trains the glimpse, core and action networks further by cross-entropy alone, with
   the location network frozen (the same looks), and reports both errors after every epoch.
   If they stay where they were, the glimpses the policy takes are what limits the model.

    python benchmarks/ram_policy_limit.py results/mnist-6-ram-seed1 --epochs 6 --lr 1e-4
    python benchmarks/ram_policy_limit.py results/cluttered-60-ram-seed1 --epochs 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from glimpse.agents.learners import RAMLearner
from glimpse.agents.ram import hybrid_loss
from glimpse.agents.run_directory import set_threads
from glimpse.agents.runs import load_agent
from glimpse.agents.trainer import adam_kwargs
from glimpse.envs.evaluation import finest_patch_on_target
from glimpse.envs.glimpse_env import make_episodes


def training_error(learner: RAMLearner, images: int, seed: int = 0) -> float:
    """Error in % on ``images`` random training canvases, following the mean locations."""
    episodes = make_episodes(1000, "train", False, learner.env_settings)
    episodes.seed(np.random.default_rng(seed).integers(0, 2**63, 1000).astype(np.uint64))
    policy, wrong = learner.policy(sample=False), 0
    learner.model.eval()
    with torch.no_grad():
        for _ in range(images // 1000):
            episodes.reset(np.ones(episodes.num_envs, bool))
            policy.start(episodes.num_envs)
            for _ in range(learner.horizon):
                rewards, _, _ = episodes.step(policy.act(episodes.observations()))
            wrong += int((rewards < 1).sum())
    return 100.0 * wrong / (images // 1000 * 1000)


def errors_by_looks(learner: RAMLearner) -> str:
    """A markdown table: the test canvases grouped by how many glimpses' finest patch overlapped
    the digit, with each group's share of the canvases, its error and its share of the errors."""
    result, _ = learner.evaluate("test")
    height, width = learner.train_episodes.task.canvas_shape[1:]
    hits = finest_patch_on_target(result.locations, result.target_boxes,
                                  learner.train_episodes.sensor, height, width)  # fmt: skip
    on_digit = np.nan_to_num(hits).sum(axis=1).astype(int)  # (N,) glimpses on the digit
    wrong = ~result.successes
    lines = ["| glimpses on the digit | canvases % | error % | share of the errors % |",
             "|---|---|---|---|"]  # fmt: skip
    for count in range(int(on_digit.max()) + 1):
        group = on_digit == count
        if group.any():
            lines.append(f"| {count} | {100 * group.mean():.1f} | {100 * wrong[group].mean():.2f} "
                         f"| {100 * wrong[group].sum() / max(wrong.sum(), 1):.1f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a RAM run directory")
    parser.add_argument("--epochs", type=int, default=6, help="epochs with the policy frozen")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--images", type=int, default=20000, help="training images to score")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    learner = load_agent(args.run)
    assert isinstance(learner, RAMLearner), f"{args.run} is not a RAM run"
    model = learner.model
    print(f"{args.run}: the test error by how many glimpses looked at the digit\n")
    print(errors_by_looks(learner) + "\n")
    print(f"{args.run}: training error {training_error(learner, args.images):.2f}%, "
          f"test error {learner.test_error():.2f}% (mean locations)")  # fmt: skip
    reader = [*model.glimpse_network.parameters(), *model.core.parameters()]
    optimizer = torch.optim.Adam(
        [*reader, *model.classifier.parameters()], lr=args.lr, **adam_kwargs()
    )
    batch_size = learner.train_episodes.num_envs
    for epoch in range(1, args.epochs + 1):
        model.train()
        for _ in range(learner.train_size // batch_size):
            loss = hybrid_loss(model(learner.train_episodes))["classification"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"policy frozen, epoch {epoch}: training error "
              f"{training_error(learner, args.images):.2f}%, test error "
              f"{learner.test_error():.2f}%")  # fmt: skip


if __name__ == "__main__":
    main()
