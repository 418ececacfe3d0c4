"""Stable-Baselines3 glue: a native ``VecEnv`` over the batched episodes.

SB3 cannot consume a ``gymnasium.vector.VectorEnv``; it expects its own ``VecEnv`` with
same-step autoreset and ``infos[i]["terminal_observation"]``. :class:`GlimpseVecEnv` provides
exactly that over :class:`glimpse.envs.glimpse_env.GlimpseVectorEnv` in ``SAME_STEP`` mode, so
SB3 gets
one batched environment instead of a ``DummyVecEnv`` of N copies. :func:`make_sb3_env` adds
SB3's ``VecMonitor`` (episode return, length and success for the logger).

    from stable_baselines3 import PPO
    from glimpse.agents.extractors import GlimpseFeaturesExtractor
    from glimpse.envs.sb3 import make_sb3_env

    env = make_sb3_env("Glimpse/MNIST-v0", num_envs=16, seed=0)
    model = PPO("MultiInputPolicy", env,
                policy_kwargs={"features_extractor_class": GlimpseFeaturesExtractor})
    model.learn(10_000)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from glimpse.envs.glimpse_env import GlimpseVectorEnv


class GlimpseVecEnv(VecEnv):
    """A Stable-Baselines3 ``VecEnv`` backed by one :class:`GlimpseVectorEnv` (same-step reset).

    Args:
        env_id: a registered ``Glimpse/...`` id (its settings are used), or None.
        num_envs: number of parallel episodes.
        **settings: environment keyword arguments, overriding the id's (``split``,
            ``render_mode``, ``glimpses``, ``task``, ...).
    """

    def __init__(self, env_id: str | None = None, num_envs: int = 8, **settings: Any) -> None:
        if env_id is not None:
            settings = {**gymnasium.spec(env_id).kwargs, **settings}
        self.venv = GlimpseVectorEnv(
            num_envs=num_envs, autoreset_mode=AutoresetMode.SAME_STEP, **settings
        )
        self._actions: np.ndarray | None = None
        super().__init__(
            num_envs, self.venv.single_observation_space, self.venv.single_action_space
        )

    def reset(self) -> dict[str, np.ndarray]:
        seeds = self._seeds if any(s is not None for s in self._seeds) else None
        observations, _ = self.venv.reset(seed=seeds)
        self._reset_seeds()
        self._reset_options()
        return observations

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() was called without step_async(actions) before it.")
        # The vector environment raises ResetNeeded if reset() has not been called yet.
        actions, self._actions = self._actions, None
        observations, rewards, terminated, _, infos = self.venv.step(actions)
        dones = terminated.copy()
        env_infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            final_info = infos["final_info"]
            for i in np.flatnonzero(dones):
                env_infos[i] = {
                    "terminal_observation": infos["final_obs"][i],
                    "is_success": bool(final_info["is_success"][i]),
                    "TimeLimit.truncated": False,
                }
                for key in ("label", "prediction"):  # a game (Catch) names no class
                    if key in final_info:
                        env_infos[i][key] = int(final_info[key][i])
        return observations, rewards, dones, env_infos

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.venv.render()
        return list(frames) if frames is not None else [None] * self.num_envs

    # The batch has no sub-environment objects; attributes are the vector environment's.
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        method = getattr(self.venv, method_name)
        return [method(*method_args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(
        self, wrapper_class: type[gymnasium.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def make_sb3_env(
    env_id: str | None = None, num_envs: int = 8, seed: int | None = None, **settings: Any
) -> VecMonitor:
    """:class:`GlimpseVecEnv` inside SB3's ``VecMonitor`` (logs return, length, success)."""
    env = GlimpseVecEnv(env_id, num_envs, **settings)
    if seed is not None:
        env.seed(seed)
    return VecMonitor(env, info_keywords=("is_success",))
