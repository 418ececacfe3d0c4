"""PPO training speed of the ``ppo`` agent: environment steps per second, rollouts and updates.

For each environment id, the agent's own settings (``agents/ppo_hyperparams.toml``, with the
per-step reward that the README's PPO runs use) and each variant of the update:

* ``shared``: SB3's PPO, one advantage for the whole action;
* ``factored``: the factored advantage (``agents/factored_ppo.py``), steps shuffled one by one;
* ``factored-episodes``: the same with whole episodes shuffled (``--ppo-minibatches
  episodes``), so that each glimpse in a minibatch is encoded once.

The variants are measured in alternating rounds in one process (medians of ``--rounds``), as
the machine's speed drifts by more than the differences from one minute to the next.

    python benchmarks/ppo_speed.py --threads 1 2
    python benchmarks/ppo_speed.py --envs Glimpse/ClutteredMNIST60-v0 --variants shared factored
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import gymnasium
import torch

import glimpse  # noqa: F401  (registers the ids)
from glimpse.agents.ppo import PPOConfig, build_model, ppo_env_settings
from glimpse.agents.recipes import recipe
from glimpse.envs.sb3 import make_sb3_env

VARIANTS: dict[str, dict[str, Any]] = {
    "shared": {"advantage": "shared"},
    "factored": {"advantage": "factored"},
    "factored-episodes": {"advantage": "factored", "minibatches": "episodes"},
}
ENV_IDS = ("Glimpse/ClutteredMNIST60-v0", "Glimpse/MNIST-v0")
RECIPE = "cluttered60-ppo-step-reward-linear-20m"  # its PPO settings, on either id


def build(env_id: str, variant: str) -> tuple[Any, dict[str, float]]:
    """The ``ppo`` agent's SB3 model for ``env_id`` with the per-step reward, one rollout in,
    and the seconds it spends collecting rollouts and updating, added up from then on."""
    env_settings = {**gymnasium.spec(env_id).kwargs, "step_reward": 1.0}
    config = PPOConfig(**{**recipe(RECIPE).settings["model"], **VARIANTS[variant]})
    env = make_sb3_env(None, config.n_envs, seed=0, **ppo_env_settings("ppo", env_settings))
    model = build_model("ppo", env, config, seed=0, device="cpu", tensorboard=None)
    model.learn(model.n_steps * model.n_envs)  # warm-up
    seconds = {"rollouts": 0.0, "updates": 0.0}
    for phase, name in (("rollouts", "collect_rollouts"), ("updates", "train")):
        method = getattr(model, name)

        def timed(*args: Any, _method: Any = method, _phase: str = phase, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                seconds[_phase] += time.perf_counter() - start

        setattr(model, name, timed)  # SB3's learn() calls them on the instance
    return model, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(ENV_IDS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rollouts", type=int, default=3, help="rollouts per round")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads")
    args = parser.parse_args()
    print(f"torch {torch.__version__}; env steps/s, medians of {args.rounds} alternating rounds "
          f"of {args.rollouts} rollouts; in brackets the share of the time spent collecting "
          "rollouts (the rest is the update)\n")  # fmt: skip
    print(f"| environment | threads | {' | '.join(args.variants)} |")
    print(f"|---|---|{'---|' * len(args.variants)}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for env_id in args.envs:
            built = {variant: build(env_id, variant) for variant in args.variants}
            rates: dict[str, list[float]] = {variant: [] for variant in args.variants}
            for _ in range(args.rounds):
                for variant, (model, _) in built.items():
                    steps = args.rollouts * model.n_steps * model.n_envs
                    start = time.perf_counter()
                    model.learn(steps, reset_num_timesteps=False)
                    rates[variant].append(steps / (time.perf_counter() - start))
            cells = []
            for variant, (_, seconds) in built.items():
                share = seconds["rollouts"] / (seconds["rollouts"] + seconds["updates"])
                cells.append(f"{statistics.median(rates[variant]):,.0f} ({100 * share:.0f}%)")
            print(f"| {env_id} | {threads} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
