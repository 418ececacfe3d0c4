"""Is a trained RAM held back by where it looks, or by what it makes of what it sees?

1. The error on training images with the evaluation policy (mean locations), next to the test
   error: if they are close, the model does not even fit its training set.
2. Then it trains the glimpse, core and action networks further by cross-entropy alone, with
   the location network frozen (the same looks), and reports both errors after every epoch.
   If they stay where they were, the glimpses the policy takes are what limits the model.

    python benchmarks/ram_policy_limit.py results/mnist-6-ram-seed1 --epochs 6 --lr 1e-4
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
