"""Environment steps per second: our batched env against Gymnasium/SB3 copies of single envs.

1. ``Glimpse/ClutteredMNIST60-v0`` stepped with random actions, as our native vector env and as
   ``gymnasium.vector.SyncVectorEnv`` of single envs, at 1, 16, 256 and 1,024 envs.
2. Stable-Baselines3 PPO (``MultiInputPolicy`` with our glimpse features extractor) through
   our ``VecEnv`` adapter and through ``DummyVecEnv`` of single envs, next to PPO on
   ``CartPole-v1`` (``MlpPolicy``) with the same PPO settings and optimiser, in the same
   process, at 1 and 2 torch threads; also SB3's default extractor and the ``ppo`` agent's own
   policy (the glimpse-history extractor, which does several glimpse networks' work per step).

    python benchmarks/env.py              # prints Markdown tables
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import glimpse  # noqa: F401  (registers the ids)
from glimpse.agents.extractors import GlimpseFeaturesExtractor
from glimpse.agents.ppo import PPOConfig, build_model, ppo_env_settings
from glimpse.agents.trainer import adam_kwargs
from glimpse.envs.sb3 import make_sb3_env

ENV_ID = "Glimpse/ClutteredMNIST60-v0"
PPO_SETTINGS = PPOConfig(n_steps=128, batch_size=256, n_epochs=4)


def steps_per_second(step: Callable[[int], None], num_envs: int, min_seconds: float) -> float:
    step(0)  # warm-up
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds:
        step(calls)
        calls += 1
    return calls * num_envs / elapsed


def vector_env_rate(vec: gym.vector.VectorEnv, num_envs: int, min_seconds: float) -> float:
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, vec.single_action_space.nvec, (num_envs, 3)) for _ in range(64)]
    vec.reset(seed=0)
    rate = steps_per_second(lambda i: vec.step(actions[i % 64]), num_envs, min_seconds)
    vec.close()
    return rate


def ppo_rate(model, total_steps: int) -> float:
    """PPO's environment steps per second (rollouts and updates) after one warm-up cycle."""
    model.learn(2 * model.n_steps * model.n_envs)
    start = time.perf_counter()
    model.learn(total_steps, reset_num_timesteps=False)
    return total_steps / (time.perf_counter() - start)


def ppo_row(num_envs: int, threads: int, total_steps: int) -> list[float]:
    """Steps/s of CartPole-v1 and of our env through each route, with the same PPO settings."""
    torch.set_num_threads(threads)
    settings = {"n_steps": PPO_SETTINGS.n_steps, "batch_size": PPO_SETTINGS.batch_size,
                "n_epochs": PPO_SETTINGS.n_epochs}  # fmt: skip
    adam = {"optimizer_kwargs": adam_kwargs()}
    extractor = {"features_extractor_class": GlimpseFeaturesExtractor, **adam}

    def ppo(env, policy: str, policy_kwargs: dict) -> float:
        return ppo_rate(PPO(policy, env, policy_kwargs=policy_kwargs, **settings), total_steps)

    history_env = make_sb3_env(ENV_ID, num_envs, seed=0, **ppo_env_settings("ppo", {}))
    return [
        ppo(make_vec_env("CartPole-v1", num_envs, seed=0), "MlpPolicy", adam),
        ppo(make_vec_env(ENV_ID, num_envs, seed=0), "MultiInputPolicy", extractor),
        ppo(make_sb3_env(ENV_ID, num_envs, seed=0), "MultiInputPolicy", extractor),
        ppo(make_sb3_env(ENV_ID, num_envs, seed=0), "MultiInputPolicy", adam),
        ppo_rate(build_model("ppo", history_env, PPO_SETTINGS, 0, "cpu", None), total_steps),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the env part")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per env measurement")
    parser.add_argument("--ppo-envs", type=int, nargs="*", default=[16, 64], help="none: skip PPO")
    parser.add_argument("--ppo-steps", type=int, default=40_960)
    parser.add_argument("--ppo-threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {ENV_ID}, random actions\n")
    print("| envs | batched env steps/s | SyncVectorEnv steps/s | speed-up |")
    print("|---|---|---|---|")
    for num_envs in (1, 16, 256, 1024):
        ours = vector_env_rate(gym.make_vec(ENV_ID, num_envs=num_envs), num_envs, args.seconds)
        sync = gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="sync")
        theirs = vector_env_rate(sync, num_envs, args.seconds)
        print(f"| {num_envs:,} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.1f}x |")

    if not args.ppo_envs:
        return
    steps = args.ppo_steps
    print(
        f"\nPPO, n_steps={PPO_SETTINGS.n_steps}, batch {PPO_SETTINGS.batch_size}, "
        f"{PPO_SETTINGS.n_epochs} epochs, fused Adam where torch has it, {steps:,} steps timed\n"
    )
    print(
        "| envs | threads | CartPole-v1, DummyVecEnv | ours, DummyVecEnv of single envs "
        "| ours, our adapter | adapter / CartPole | ours, adapter, SB3's default extractor "
        "| ours, adapter, the `ppo` agent's policy (history extractor) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in args.ppo_envs:
        for threads in args.ppo_threads:
            cartpole, dummy, adapter, default, history = ppo_row(n, threads, steps)
            print(
                f"| {n} | {threads} | {cartpole:,.0f} | {dummy:,.0f} | {adapter:,.0f} "
                f"| {adapter / cartpole:.2f} | {default:,.0f} | {history:,.0f} |"
            )


if __name__ == "__main__":
    main()
