"""Environment steps per second: our batched env against Gymnasium/SB3 copies of single envs.

1. ``Glimpse/ClutteredMNIST60-v0`` stepped with random actions, as our native vector env and as
   ``gymnasium.vector.SyncVectorEnv`` of single envs, at 1, 16, 256 and 1,024 envs.
2. Stable-Baselines3 PPO (``MultiInputPolicy`` with our glimpse features extractor) through
   our ``VecEnv`` adapter and through ``DummyVecEnv`` of single envs, next to PPO on
   ``CartPole-v1`` (``MlpPolicy``) with the same PPO settings, in the same process.

    python benchmarks/env.py              # prints Markdown tables
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

import glimpse  # noqa: F401  (registers the ids)

ENV_ID = "Glimpse/ClutteredMNIST60-v0"


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


def ppo_rate(env, policy: str, policy_kwargs: dict, total_steps: int) -> float:
    from stable_baselines3 import PPO

    model = PPO(policy, env, n_steps=128, batch_size=256, n_epochs=4, policy_kwargs=policy_kwargs)
    model.learn(2 * 128 * env.num_envs)  # warm-up (first rollout and update)
    start = time.perf_counter()
    model.learn(total_steps, reset_num_timesteps=False)
    return total_steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the env part")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per env measurement")
    parser.add_argument("--ppo-envs", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--ppo-steps", type=int, default=40_960)
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

    from stable_baselines3.common.env_util import make_vec_env

    from envs.sb3 import GlimpseFeaturesExtractor, make_sb3_env

    steps = args.ppo_steps
    extractor = {"features_extractor_class": GlimpseFeaturesExtractor}
    print(f"\nPPO (1 thread), n_steps=128, batch 256, 4 epochs, {steps:,} steps timed\n")
    print(
        "| envs | CartPole-v1, DummyVecEnv | ours, DummyVecEnv of single envs | ours, our adapter "
        "| adapter / CartPole | ours, our adapter, SB3's default extractor |"
    )
    print("|---|---|---|---|---|---|")
    for n in args.ppo_envs:
        torch.set_num_threads(1)
        cartpole = ppo_rate(make_vec_env("CartPole-v1", n, seed=0), "MlpPolicy", {}, steps)
        dummy = ppo_rate(make_vec_env(ENV_ID, n, seed=0), "MultiInputPolicy", extractor, steps)
        adapter = ppo_rate(make_sb3_env(ENV_ID, n, seed=0), "MultiInputPolicy", extractor, steps)
        default = ppo_rate(make_sb3_env(ENV_ID, n, seed=0), "MultiInputPolicy", {}, steps)
        print(
            f"| {n} | {cartpole:,.0f} | {dummy:,.0f} | {adapter:,.0f} | {adapter / cartpole:.2f} "
            f"| {default:,.0f} |"
        )


if __name__ == "__main__":
    main()
