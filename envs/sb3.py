"""Stable-Baselines3 glue: a native ``VecEnv`` over the batched episodes, and a features extractor.

SB3 cannot consume a ``gymnasium.vector.VectorEnv``; it expects its own ``VecEnv`` with
same-step autoreset and ``infos[i]["terminal_observation"]``. :class:`GlimpseVecEnv` provides
exactly that over :class:`envs.glimpse_env.GlimpseVectorEnv` in ``SAME_STEP`` mode, so SB3 gets
one batched environment instead of a ``DummyVecEnv`` of N copies. :func:`make_sb3_env` adds
SB3's ``VecMonitor`` (episode return, length and success for the logger).

    from stable_baselines3 import PPO
    from envs.sb3 import GlimpseFeaturesExtractor, make_sb3_env

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
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn
from torch import nn

from envs.glimpse_env import GlimpseVectorEnv
from envs.networks import GlimpseNetwork


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
        observations, rewards, terminated, _, infos = self.venv.step(self._actions)
        dones = terminated.copy()
        env_infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            final_info = infos["final_info"]
            for i in np.flatnonzero(dones):
                env_infos[i] = {
                    "terminal_observation": infos["final_obs"][i],
                    "is_success": bool(final_info["is_success"][i]),
                    "label": int(final_info["label"][i]),
                    "prediction": int(final_info["prediction"][i]),
                    "TimeLimit.truncated": False,
                }
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


class GlimpseFeaturesExtractor(BaseFeaturesExtractor):
    """SB3 features from a glimpse observation: the paper's glimpse network.

    Reads ``glimpse``, ``location`` and ``step`` and returns ``g_t`` (``features_dim`` units).
    It has no memory of earlier glimpses: use it with a recurrent policy (sb3-contrib
    ``RecurrentPPO``) or give it an observation that carries the history.
    """

    def __init__(self, observation_space: spaces.Dict, features_dim: int = 256) -> None:
        super().__init__(observation_space, features_dim)
        glimpse_shape = observation_space["glimpse"].shape
        where_dim = observation_space["location"].shape[0] + observation_space["step"].shape[0]
        self.network = GlimpseNetwork(glimpse_shape, where_dim, out_units=features_dim)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        where = torch.cat([observations["location"], observations["step"]], dim=1)
        return self.network(observations["glimpse"], where)


class GlimpseHistoryExtractor(BaseFeaturesExtractor):
    """Memory without recurrence, for plain PPO: every glimpse so far, encoded and pooled.

    Needs the environment's ``history=True`` observation, whose slot ``i`` holds the ``i``-th
    glimpse and its location, the current one included. Each glimpse taken so far goes through
    one shared glimpse network with its location (the empty slots of later steps, about half of
    them, are not computed, and read as zeros). The features are the current glimpse's ``g_t``,
    the step and the glimpses so far, mixed by one layer. ``pooling`` says how the glimpses so
    far enter:

    * ``"mean"``: the mean of the ``g_i`` seen, a set (which glimpse came when is lost);
    * ``"max"``: their elementwise maximum, also a set, but one that a single glimpse of the
      digit among many of clutter is not averaged away from (each ``g_i`` is a ReLU's output,
      so the zeros of the empty slots never win);
    * ``"concat"``: all ``T`` slots side by side, so the mixing layer has weights of its own
      for each slot (``T`` times its parameters, and each slot's weights learn only from what
      that slot saw);
    * ``"rnn"``: the paper's rectified core, ``h_i = ReLU(W_hh h_{i-1} + W_gh g_i)``, run over
      the glimpses in order, and its state after the current one: RAM's memory, recomputed
      from the history at every step (the empty slots come after it, so they cannot reach it).
    """

    POOLINGS = ("mean", "max", "concat", "rnn")

    def __init__(
        self, observation_space: spaces.Dict, features_dim: int = 256, pooling: str = "mean"
    ) -> None:
        super().__init__(observation_space, features_dim)
        if "history_glimpses" not in observation_space.spaces:
            raise ValueError(
                "GlimpseHistoryExtractor needs the history observation: make the environment "
                "with history=True (glimpse train --agent ppo does this)."
            )
        if pooling not in self.POOLINGS:
            raise ValueError(f"pooling must be one of {self.POOLINGS}, not {pooling!r}.")
        self.pooling = pooling
        self.horizon = observation_space["history_glimpses"].shape[0]
        self.network = GlimpseNetwork(observation_space["glimpse"].shape, out_units=features_dim)
        if pooling == "rnn":
            self.core = nn.RNN(features_dim, features_dim, nonlinearity="relu", batch_first=True)
        history_units = features_dim * (self.horizon if pooling == "concat" else 1)
        self.mix = nn.Linear(features_dim + history_units + 1, features_dim)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.from_histories(
            observations["history_glimpses"], observations["history_locations"],
            observations["step"],
        )  # fmt: skip

    def from_histories(
        self,
        glimpses: torch.Tensor,
        locations: torch.Tensor,
        step: torch.Tensor,
        source: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The features of ``N`` observations given by their ``step`` ``(N, 1)`` and histories.

        ``glimpses`` ``(S, T, k, C, g, g)`` and ``locations`` ``(S, T, 2)`` are histories;
        sample ``i`` reads row ``source[i]`` (``i`` by default) up to its own step. The steps
        of one episode have one history, each a longer prefix of it, so a PPO update that
        passes an episode's last history once for all its steps encodes each glimpse once,
        not once for every later step (:mod:`agents.factored_ppo`); the features are the same.
        """
        horizon = glimpses.shape[1]
        taken = torch.round(step * self.horizon).long() + 1  # (N, 1), the current one included
        slots = torch.arange(horizon, device=step.device)
        seen = slots < taken  # (N, T)
        if source is None:
            rows_seen = seen
        else:  # each history row as far as the furthest sample reading it
            furthest = taken.new_zeros(len(glimpses)).scatter_reduce(0, source, taken[:, 0], "amax")
            rows_seen = slots < furthest[:, None]  # (S, T)
        features = self.network(glimpses[rows_seen], locations[rows_seen])
        encoded = features.new_zeros(*rows_seen.shape, features.shape[1])
        encoded = encoded.index_put((rows_seen,), features)  # (S, T, features), zero if not seen
        if source is not None:  # each sample's own prefix of its row
            encoded = encoded[source] * seen[..., None]  # (N, T, features)
        rows = torch.arange(len(step), device=step.device)
        current = encoded[rows, taken[:, 0] - 1]
        if self.pooling == "concat":
            pooled = encoded.flatten(1)  # (N, T * features)
        elif self.pooling == "rnn":
            states = self.core(encoded[:, : int(taken.max())])[0]  # no step past the last taken
            pooled = states[rows, taken[:, 0] - 1]  # (N, features): the state after the current
        elif self.pooling == "max":
            pooled = encoded.amax(1)  # (N, features): g_i >= 0, so the zero slots never win
        else:
            pooled = encoded.sum(1) / taken  # (N, features)
        return torch.relu(self.mix(torch.cat([current, pooled, step], dim=1)))
