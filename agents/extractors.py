"""Stable-Baselines3 features extractors over the glimpse observation (the glimpse network inside
them is RAM's, :class:`glimpse.agents.networks.GlimpseNetwork`).

Plug them into SB3 by composition, through ``policy_kwargs`` (see :mod:`glimpse.envs.sb3` for an
example): :class:`GlimpseFeaturesExtractor` for a recurrent policy, :class:`GlimpseHistoryExtractor`
for plain PPO on the environment's ``history`` observation, and :class:`ScreenExtractor`, a
small CNN over the whole screen (the environment's ``screen`` observation), for the full-view
policy that glimpse agents are compared with.
"""

from __future__ import annotations

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from glimpse.agents.networks import GlimpseNetwork


class GlimpseFeaturesExtractor(BaseFeaturesExtractor):
    """SB3 features from a glimpse observation: the paper's glimpse network.

    Reads ``glimpse``, ``location`` and ``step`` and returns ``g_t`` (``features_dim`` units);
    each scale ``k`` of the glimpse is first multiplied by ``scale_gain ** k`` (1: as the
    sensor gives it; see :func:`scale_gains`). It has no memory of earlier glimpses: use it
    with a recurrent policy (sb3-contrib ``RecurrentPPO``) or give it an observation that
    carries the history.
    """

    def __init__(
        self, observation_space: spaces.Dict, features_dim: int = 256, scale_gain: float = 1.0
    ) -> None:
        super().__init__(observation_space, features_dim)
        glimpse_shape = observation_space["glimpse"].shape
        where_dim = observation_space["location"].shape[0] + observation_space["step"].shape[0]
        self.network = GlimpseNetwork(glimpse_shape, where_dim, out_units=features_dim)
        self.register_buffer("gains", scale_gains(glimpse_shape, scale_gain), persistent=False)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        where = torch.cat([observations["location"], observations["step"]], dim=1)
        return self.network(scaled(observations["glimpse"], self.gains), where)


def scale_gains(glimpse_shape: tuple[int, ...], scale_gain: float) -> torch.Tensor | None:
    """Per-scale input multipliers ``scale_gain ** k`` for a glimpse ``(k, C, g, g)``, shaped to
    broadcast over a batch of them; None where ``scale_gain`` is 1.

    With the sensor's scale factor ``s``, ``scale_gain = s ** 2`` turns each patch's cell means
    into sums (``--glimpse-scales sum``): one lit pixel then reads 1 at every scale, where the
    mean reads it as ``1 / s ** 2k`` (1/16 in the coarsest of three scales), too faint for a
    freshly initialised network to tell from nothing. The same function of the pixels, read
    with larger first-layer weights for the coarse scales.
    """
    if scale_gain == 1:
        return None  # read as the sensor gives it: no multiply on PPO's per-step path
    num_scales = glimpse_shape[0]
    gains = torch.tensor([float(scale_gain) ** k for k in range(num_scales)])
    return gains.view(num_scales, *([1] * (len(glimpse_shape) - 1)))


def scaled(glimpses: torch.Tensor, gains: torch.Tensor | None) -> torch.Tensor:
    """``glimpses`` with each scale multiplied by its gain (:func:`scale_gains`), if any."""
    return glimpses if gains is None else glimpses * gains


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

    Each scale ``k`` of every glimpse is first multiplied by ``scale_gain ** k`` (1: as the
    sensor gives it; see :func:`scale_gains`).
    """

    POOLINGS = ("mean", "max", "concat", "rnn")

    def __init__(
        self,
        observation_space: spaces.Dict,
        features_dim: int = 256,
        pooling: str = "mean",
        scale_gain: float = 1.0,
    ) -> None:
        super().__init__(observation_space, features_dim)
        if "history_glimpses" not in observation_space.spaces:
            raise ValueError(
                "GlimpseHistoryExtractor needs the history observation: make the environment "
                "with history=True (glimpse train ppo does this)."
            )
        if pooling not in self.POOLINGS:
            raise ValueError(f"pooling must be one of {self.POOLINGS}, not {pooling!r}.")
        self.pooling = pooling
        self.horizon = observation_space["history_glimpses"].shape[0]
        glimpse_shape = observation_space["glimpse"].shape
        self.network = GlimpseNetwork(glimpse_shape, out_units=features_dim)
        self.register_buffer("gains", scale_gains(glimpse_shape, scale_gain), persistent=False)
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
        not once for every later step (:mod:`glimpse.agents.factored_ppo`); the features are the
        same.
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
        features = self.network(scaled(glimpses[rows_seen], self.gains), locations[rows_seen])
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


class ScreenExtractor(BaseFeaturesExtractor):
    """SB3 features from the whole screen: a full-view policy, the comparison for glimpses.

    Reads ``screen`` (the canvas, which SB3 scales to [0, 1]) and ``step``. Convolutions of
    3 x 3 with ReLU: one of 16 channels, at full resolution on a screen of at most 32 pixels
    and at stride 2 on a larger one (a 3 x 3 kernel at stride 2 still reads every pixel; on
    64 x 64 this cuts the network from 17.6 to 4.9 M FLOPs, and its forward and backward pass
    about 5 times; experiment log), then 32 channels at stride 2 until the side is at most 8
    (24 -> 24 -> 12 -> 6; 64 -> 32 -> 16 -> 8), flattened, so where the ball and the paddle
    are is kept; one layer mixes it with the step into ``features_dim`` units. A single screen
    does not show which way the ball moves: use it with a recurrent policy.
    """

    def __init__(self, observation_space: spaces.Dict, features_dim: int = 256) -> None:
        super().__init__(observation_space, features_dim)
        channels, side, _ = observation_space["screen"].shape
        first_stride = 1 if side <= 32 else 2
        layers: list[nn.Module] = [
            nn.Conv2d(channels, 16, 3, stride=first_stride, padding=1),
            nn.ReLU(),
        ]
        width, side = 16, (side + first_stride - 1) // first_stride
        while side > 8:
            layers += [nn.Conv2d(width, 32, 3, stride=2, padding=1), nn.ReLU()]
            width, side = 32, (side + 1) // 2
        self.convolutions = nn.Sequential(*layers, nn.Flatten())
        self.mix = nn.Linear(width * side * side + 1, features_dim)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        seen = self.convolutions(observations["screen"].float())
        return torch.relu(self.mix(torch.cat([seen, observations["step"]], dim=1)))
