"""The Recurrent Attention Model (Mnih, Heess, Graves, Kavukcuoglu, 2014): the model, its losses
(:func:`hybrid_loss` on a still task, :func:`game_loss` in a game, :func:`ppo_loss` with PPO as
the location learner), the policy that plays it in an environment (:class:`RAMPolicy`) and the
inference path that runs whole episodes inside the model (:class:`RAMPredictor`).

One ``nn.Module`` per component of the paper, with the paper's symbols:

* glimpse network ``g_t = f_g(x_t, l_{t-1})``
  (:class:`glimpse.agents.networks.GlimpseNetwork`, shared with the PPO features extractor;
  ``glimpse_encoder="conv"`` reads the pixels with two convolutions first,
  :class:`glimpse.agents.networks.ConvGlimpseNetwork`);
* core network ``h_t = f_h(h_{t-1}, g_t)``: the paper's rectified RNN or an LSTM;
* location network ``l_t ~ N(f_l(h_t), sigma^2 I)``: a Gaussian whose ``sigma`` is a setting,
  not learned (``location_std``; ``location_std_start`` anneals it over the first half of training);
* action network ``a = softmax(f_a(h_T))``: the class, read after the last glimpse;
* baseline network ``b_t = f_b(h_t)``: the expected reward, to reduce REINFORCE's variance.

What gradients flow where (tested in ``tests/test_ram.py``):

* The classifier's cross-entropy trains the action, core and glimpse networks.
* REINFORCE trains only the location network: it reads ``h_t.detach()``, and the sampled
  location is a constant (no gradient reaches the classifier through where the agent looked).
  With ``reinforce_core=True`` it reads ``h_t`` itself, so REINFORCE also trains the core and
  glimpse networks, as the paper's gradient over all parameters ``theta`` does: the state
  then learns to serve where to look next, not only what the digit is.
* The baseline is fit to the reward by squared error and also reads ``h_t.detach()``
  (``h_t`` itself with ``baseline_core=True``, so that its error also trains the core).
* The log-probability is that of the location actually sent to the environment (the raw
  Gaussian sample; the environment clips it to the image, which is part of its dynamics).

In a game (``Glimpse/Catch-v0``, :mod:`glimpse.catch`) there is no class to name: at every step
the action network's softmax is a policy over the paddle's moves, sampled in training, and the
reward is 1 for a catch at the end (:func:`game_loss`). REINFORCE on the moves then takes the
classifier's place: it trains the action, core and glimpse networks (the paper's LSTM agent).

With ``location_learner="ppo"`` PPO's clipped objective takes REINFORCE's place on a still
task (:func:`ppo_loss`): each batch of episodes is played once (:class:`EpisodeRecord`) and
trained on ``ppo_epochs`` times, replayed from its glimpses (:meth:`RAM.replay`).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from glimpse.agents.bptt import Observe, glimpse_core_sequence
from glimpse.agents.networks import ConvGlimpseNetwork, GlimpseNetwork, glimpse_features
from glimpse.config import check_at_least, check_fields, check_positive, option
from glimpse.envs.episodes import GlimpseEpisodes
from glimpse.errors import ConfigError
from glimpse.sensor import SLICED_READ_PATCHES, FramedImages, GlimpseSensor, read_framed

CORES = ("rnn", "lstm")
GLIMPSE_ENCODERS = ("linear", "conv")
LOCATION_LEARNERS = ("reinforce", "ppo")
REWARDS = ("correct", "probability", "log-likelihood")


@dataclass(frozen=True)
class RAMConfig:
    """Sizes of the networks, the location policy's noise and what it learns from."""

    core: str = option("rnn", "Core network: the paper's rectified RNN or an LSTM.", CORES)
    hidden_size: int = option(256, "Units of the core state h_t.")
    glimpse_encoder: str = option(
        "linear", "How the glimpse network reads the glimpse: the paper's linear map of the "
        "flattened pixels, or conv: two 3x3 convolutions of --glimpse-filters filters (the "
        "second of stride 2) over the scales stacked as channels, then the linear map.",
        GLIMPSE_ENCODERS,
    )  # fmt: skip
    glimpse_filters: int = option(
        32, "With --glimpse-encoder conv: filters of each convolution."
    )  # fmt: skip
    glimpse_units: int = option(128, "Units of h_g (what) in the glimpse network.")
    location_units: int = option(128, "Units of h_l (where) in the glimpse network.")
    glimpse_out_units: int = option(256, "Units of g_t.")
    location_std: float = option(0.05, "Standard deviation sigma of the location policy.")
    location_std_start: float | None = option(
        None, "Exploration: sigma starts at this value and decays geometrically to "
        "--location-std over the first half of training; default: --location-std throughout."
    )  # fmt: skip
    locator_units: int = option(
        0, "Hidden units of the location network: 0 is the paper's linear map of h_t; N adds "
        "a rectified layer of N units before it."
    )  # fmt: skip
    reinforce_core: bool = option(
        False, "REINFORCE also trains the core and glimpse networks (the location head reads h_t, "
        "not h_t.detach())."
    )  # fmt: skip
    reward: str = option(
        "correct", "REINFORCE's reward: 1 for a correct answer, else 0 (the paper); "
        "probability, p(y | glimpses), the classifier's probability of the true class (the "
        "expected reward of an answer drawn from it); or log-likelihood, log p(y | glimpses).",
        REWARDS,
    )  # fmt: skip
    early_answer_weight: float = option(
        0.0, "Weight of a cross-entropy for the class read from every state before the last "
        "(h_1 .. h_{T-1}, mean over them; 0: the paper, the class is only read from h_T)."
    )  # fmt: skip
    reinforce_weight: float = option(1.0, "Weight of the REINFORCE term in the hybrid loss.")
    location_lr_factor: float = option(
        1.0, "The location network's learning rate as a share of --lr (Adam moves each weight "
        "by about the learning rate, however noisy REINFORCE's gradient is)."
    )  # fmt: skip
    rollouts_per_image: int = option(
        1, "Episodes of each training image in a batch (K, dividing --batch-size); K > 1 "
        "measures REINFORCE's advantage against the mean reward of the image's other K - 1 "
        "episodes instead of the learned baseline."
    )  # fmt: skip
    gae_lambda: float = option(
        1.0, "REINFORCE's advantage at step t: 1 is R - b_t (the paper); below 1, GAE(lambda) "
        "over the baseline's own predictions (b_{t+1} - b_t, ..., R - b_T), which credits each "
        "action with the change it made to the expected reward: less variance, some bias."
    )  # fmt: skip
    baseline_core: bool = option(
        False, "The baseline's squared error also trains the core and glimpse networks (it "
        "reads h_t, not h_t.detach(), as an actor-critic's value does): in a game, the one "
        "signal besides REINFORCE about what the screen shows."
    )  # fmt: skip
    entropy_weight: float = option(
        0.0, "Games only: weight of a bonus for the entropy of the paddle's moves (summed over "
        "the steps), which keeps the paddle exploring; 0 is the paper."
    )  # fmt: skip
    location_learner: str = option(
        "reinforce", "What trains the location network: REINFORCE (the paper), or ppo: PPO's "
        "clipped objective, each batch of episodes trained on --ppo-epochs times (replayed "
        "from its glimpses), the classifier still by cross-entropy. Still tasks only.",
        LOCATION_LEARNERS,
    )  # fmt: skip
    ppo_epochs: int = option(
        4, "With --location-learner ppo: updates per batch of episodes (the first is "
        "REINFORCE's; an epoch of --epoch-size images then holds 1/N as many new episodes)."
    )  # fmt: skip
    ppo_clip: float = option(
        0.2, "With --location-learner ppo: the clip range of the probability ratio."
    )  # fmt: skip

    def __post_init__(self) -> None:
        check_fields(self)
        units = ("hidden_size", "glimpse_units", "location_units", "glimpse_out_units")
        check_at_least(self, 1, *units)
        check_at_least(self, 0, "locator_units", "early_answer_weight", "entropy_weight")
        if not 0 < self.gae_lambda <= 1:
            raise ConfigError(
                f"gae_lambda={self.gae_lambda} must be in (0, 1]: 1 is the paper's R - b_t."
            )
        if self.gae_lambda < 1 and self.rollouts_per_image > 1:
            raise ConfigError(
                "gae_lambda < 1 builds the advantage from the learned baseline, "
                "rollouts_per_image > 1 from the image's other episodes: choose one."
            )
        check_at_least(self, 1, "rollouts_per_image", "ppo_epochs")
        check_positive(self, "location_std", "location_lr_factor", "ppo_clip")
        if self.location_std_start is not None and self.location_std_start <= 0:
            raise ConfigError(
                f"location_std_start={self.location_std_start} must be positive; leave it out "
                "for a constant --location-std."
            )

    def location_std_at(self, progress: float) -> float:
        """Sigma after ``progress`` (in ``[0, 1]``) of training: geometric from
        ``location_std_start`` to ``location_std`` over the first half, then constant."""
        if self.location_std_start is None:
            return self.location_std
        decayed = min(1.0, 2.0 * progress)
        return self.location_std_start * (self.location_std / self.location_std_start) ** decayed


class CoreNetwork(nn.Module):
    """``h_t = ReLU(W_hh h_{t-1} + W_gh g_t)`` (the paper), or ``h_t, c_t = LSTM(g_t, h, c)``.

    The state is a tuple: ``(h,)`` for the RNN, ``(h, c)`` for the LSTM, or ``None`` before the
    first glimpse (a zero state; the RNN then skips ``W_hh h_0 = 0``). ``W_hh`` and ``W_gh`` are
    stored as one ``Linear`` on ``[h_{t-1}; g_t]``: the same map with one matrix product.
    """

    def __init__(self, input_size: int, hidden_size: int, kind: str = "rnn") -> None:
        super().__init__()
        self.kind, self.hidden_size = kind, hidden_size
        if kind == "lstm":
            self.cell = nn.LSTMCell(input_size, hidden_size)
        else:
            self.linear = nn.Linear(hidden_size + input_size, hidden_size)  # [W_hh W_gh]

    def forward(
        self, g_t: torch.Tensor, state: tuple[torch.Tensor, ...] | None
    ) -> tuple[torch.Tensor, ...]:
        if self.kind == "lstm":
            return self.cell(g_t, state)
        h_prev = None if state is None else state[0]
        return (rnn_core(g_t, h_prev, self.linear.weight, self.linear.bias, self.hidden_size),)


def rnn_core(
    g_t: torch.Tensor,
    h_prev: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor,
    hidden_size: int,
) -> torch.Tensor:
    """The rectified core ``h_t = ReLU([W_hh W_gh] [h_{t-1}; g_t] + b)``; ``h_prev=None`` is
    ``h_0 = 0``, where only ``W_gh g_1`` is computed (half the first step's product). A
    function of the weights, for TorchScript (see :func:`glimpse_features`)."""
    if h_prev is None:
        return F.linear(g_t, weight[:, hidden_size:], bias).relu_()
    return F.linear(torch.cat([h_prev, g_t], dim=1), weight, bias).relu_()


class LocationNetwork(nn.Module):
    """``mu_t = tanh(W_l h_t)``, ``l_t ~ N(mu_t, sigma^2 I)``; tanh keeps the mean on the image.

    With ``hidden_units > 0`` the mean is ``tanh(W_l ReLU(W_h h_t))``: a rectified layer
    between the state and the mean (not in the paper; see docs/experiment-log.md#ram).
    ``std`` is a plain attribute, not a parameter: an exploration schedule may set it between
    batches (:meth:`RAMConfig.location_std_at`).
    """

    def __init__(self, hidden_size: int, std: float, hidden_units: int = 0) -> None:
        super().__init__()
        self.hidden = nn.Linear(hidden_size, hidden_units) if hidden_units else None
        self.mean = nn.Linear(hidden_units or hidden_size, 2)
        self.std = std

    def forward(self, h_t: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The location sent to the environment and its log-probability (no gradient via l_t)."""
        mu = self.mu(h_t)  # (B, 2)
        l_t = self.draw(mu, sample)
        return l_t, self.log_prob(l_t, mu)  # (B, 2), (B,)

    def mu(self, h_t: torch.Tensor) -> torch.Tensor:
        """The mean ``mu_t``, shape ``(..., 2)``."""
        hidden = self.hidden
        return location_mean(
            h_t, None if hidden is None else hidden.weight, None if hidden is None else hidden.bias,
            self.mean.weight, self.mean.bias,
        )  # fmt: skip

    def draw(self, mu: torch.Tensor, sample: bool) -> torch.Tensor:
        """``l_t``: a sample of ``N(mu, sigma^2 I)`` (or ``mu`` itself), a constant."""
        return (mu + self.std * torch.randn_like(mu)).detach() if sample else mu.detach()

    def log_prob(self, l_t: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """``log N(l_t; mu, sigma^2 I)``, shape ``(...)``; written out, as torch.distributions
        costs more than the maths."""
        log_normaliser = 2 * (math.log(self.std) + 0.5 * math.log(2 * math.pi))
        return -((l_t - mu) ** 2).sum(dim=-1) / (2 * self.std**2) - log_normaliser


def location_mean(
    h_t: torch.Tensor,
    hidden_weight: torch.Tensor | None,
    hidden_bias: torch.Tensor | None,
    mean_weight: torch.Tensor,
    mean_bias: torch.Tensor,
) -> torch.Tensor:
    """:meth:`LocationNetwork.mu` as a function of the weights, for TorchScript."""
    if hidden_weight is not None:
        h_t = F.linear(h_t, hidden_weight, hidden_bias).relu_()
    return F.linear(h_t, mean_weight, mean_bias).tanh_()


class ActionNetwork(nn.Module):
    """``log softmax(W_a h_T)``: log-probabilities of the classes."""

    def __init__(self, hidden_size: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, num_classes)

    def forward(self, h_t: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(F.linear(h_t, self.linear.weight, self.linear.bias), dim=1)


class BaselineNetwork(nn.Module):
    """``b_t = W_b h_t``: the expected final reward given the state so far."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)

    def forward(self, h_t: torch.Tensor) -> torch.Tensor:
        return self.linear(h_t).squeeze(-1)


@dataclass
class EpisodeRecord:
    """What a batch of training episodes saw and did, kept to train on it again (PPO): the
    glimpse and location observed at each step, the locations ``l_1 .. l_{T-1}`` moved to."""

    observed: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    moves: list[torch.Tensor] = field(default_factory=list)


@dataclass
class Rollout:
    """A batch of training episodes: what the hybrid loss (or, in a game, the game loss)
    needs."""

    log_probs: torch.Tensor  # (B, n_classes) class log-probabilities after the last glimpse
    labels: torch.Tensor  # (B,); in a game -1
    rewards: torch.Tensor  # (B,) 1 for a correct answer (a catch), else 0
    log_pi: torch.Tensor  # (B, T-1) log-probabilities of the locations l_1 .. l_{T-1}
    baselines: torch.Tensor  # (B, T-1); in a game (B, T), one per move
    early_log_probs: torch.Tensor | None = None  # (B, T-1, n_classes), from h_1 .. h_{T-1}
    move_log_pi: torch.Tensor | None = None  # a game's (B, T): the moves a_1 .. a_T played
    move_entropy: torch.Tensor | None = None  # a game's (B, T): entropy of the move policy


class RAM(nn.Module):
    """The Recurrent Attention Model; see the module docstring."""

    def __init__(self, glimpse_shape: tuple[int, ...], num_classes: int, config: RAMConfig) -> None:
        super().__init__()
        self.config, self.num_classes = config, num_classes
        sizes = {"what_units": config.glimpse_units, "where_units": config.location_units,
                 "out_units": config.glimpse_out_units}  # fmt: skip
        if config.glimpse_encoder == "conv":
            self.glimpse_network: GlimpseNetwork = ConvGlimpseNetwork(
                glimpse_shape, channels=config.glimpse_filters, **sizes
            )
        else:
            self.glimpse_network = GlimpseNetwork(glimpse_shape, **sizes)
        self.core = CoreNetwork(config.glimpse_out_units, config.hidden_size, config.core)
        self.locator = LocationNetwork(
            config.hidden_size, config.location_std, config.locator_units
        )
        self.classifier = ActionNetwork(config.hidden_size, num_classes)
        self.baseliner = BaselineNetwork(config.hidden_size)
        self.hand_written_bptt = True  # see encode()
        # the rectified core on the linear glimpse network: what the hand-written backward
        # pass (encode) and the compiled inference episode (RAMPredictor) are written for
        self.paper_networks = config.core == "rnn" and config.glimpse_encoder == "linear"

    def step(
        self,
        observations: dict[str, np.ndarray],
        state: tuple[torch.Tensor, ...] | None,
        last: bool,
        sample: bool,
    ) -> tuple[np.ndarray, tuple[torch.Tensor, ...]]:
        """Reads one glimpse, updates the core, and acts: move (``last=False``) or answer.

        ``state`` is the core's state, ``None`` before the first glimpse. Returns the action
        ``(B, 2 + n_classes)`` (location, then class log-probabilities) and the new state.
        """
        glimpse, location = self._observed(observations)
        state = self.core(self.glimpse_network(glimpse, location), state)
        h_t = state[0]  # (B, hidden_size)
        scores = self.classifier(h_t)  # a still task reads them at the end, a game at every step
        if last:
            return self._answer_action(scores), state
        l_t, _ = self.locator(h_t, sample)
        return self._move_action(l_t, scores), state

    def forward(self, episodes: GlimpseEpisodes, record: EpisodeRecord | None = None) -> Rollout:
        """Runs one episode in every slot of ``episodes``, sampling locations, and collects it;
        also into ``record`` where given (:meth:`replay` trains on it again).

        The environment is stepped from inside the forward pass, in this order: ``reset``
        shows the first glimpse; :meth:`encode` then calls ``observe(h_{t-1})`` once per
        glimpse, which (from the second on) samples ``l_t`` from the location network, steps
        the environment there and returns the glimpse read; after the last glimpse the
        final step (the classifier's answer on a still task, a paddle move in a game) returns
        the reward. For the paper's networks ``encode`` hands this loop to
        :func:`glimpse.agents.bptt.glimpse_core_sequence` (a hand-written backward pass through
        time). The heads then read all the core states ``h_1 .. h_T`` at once. (A training
        batch is a forward pass, so DistributedDataParallel can wrap it.)
        """
        episodes.reset(np.ones(episodes.num_envs, bool))
        game = episodes.dynamic
        kept = EpisodeRecord() if record is None else record
        moves = kept.moves  # l_1 .. l_{T-1}, as sent to the environment
        played: list[torch.Tensor] = []  # a game's paddle moves a_1 .. a_T

        def observe(h_prev: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            if h_prev is not None:  # act on h_{t-1}: look somewhere next (and, in a game, move)
                with torch.no_grad():
                    l_t = self.locator.draw(self.locator.mu(h_prev), sample=True)
                    scores = self._play(h_prev, played) if game else None
                moves.append(l_t)
                episodes.step(self._move_action(l_t, scores))
            observed = self._observed(episodes.observations())
            if record is not None:
                record.observed.append(observed)
            return observed

        h = self.encode(observe, episodes.config.glimpses)  # (T, B, hidden_size)
        log_probs = self.classifier(h[-1])  # (B, n_classes)
        with torch.no_grad():
            answer = self._play(h[-1].detach(), played) if game else log_probs.detach()
        rewards, _, infos = episodes.step(self._answer_action(answer))
        labels = infos["label"] if "label" in infos else np.full(episodes.num_envs, -1)
        labels_t, rewards_t = (torch.from_numpy(a).to(h.device) for a in (labels, rewards))
        rollout = self._read_heads(h, moves, labels_t, rewards_t, game, log_probs)
        if game:
            move_scores = self.classifier(h.flatten(0, 1)).view(*h.shape[:2], -1)
            played_moves = torch.stack(played)[..., None]
            rollout.move_log_pi = move_scores.gather(2, played_moves).squeeze(2).t()
            rollout.move_entropy = -(move_scores.exp() * move_scores).sum(dim=2).t()
        return rollout

    def replay(self, record: EpisodeRecord, labels: torch.Tensor, rewards: torch.Tensor) -> Rollout:
        """The rollout of episodes already played (a still task's), with today's weights: the
        recorded glimpses read again, the recorded locations' log-probabilities under today's
        location network (PPO's ratio needs them)."""
        steps = iter(record.observed)
        h = self.encode(lambda h_prev: next(steps), len(record.observed))
        return self._read_heads(h, record.moves, labels, rewards, game=False)

    def _read_heads(
        self,
        h: torch.Tensor,
        moves: list[torch.Tensor],
        labels: torch.Tensor,
        rewards: torch.Tensor,
        game: bool,
        log_probs: torch.Tensor | None = None,
    ) -> Rollout:
        """The heads on the core states ``h`` ``(T, B, hidden)`` of episodes that moved to
        ``moves``: the class (``log_probs``, where already read), the locations'
        log-probabilities, the baselines."""
        if log_probs is None:
            log_probs = self.classifier(h[-1])  # (B, n_classes)
        states = h[:-1]  # h_1 .. h_{T-1}, which chose l_1 .. l_{T-1}
        mu = self.locator.mu(states if self.config.reinforce_core else states.detach())
        # (T-1, B); with a single glimpse there is no move: empty, shape (0, B)
        log_pi = self.locator.log_prob(torch.stack(moves), mu) if moves else mu[..., 0]
        early_log_probs = None  # (B, T-1, n_classes): the class read from h_1 .. h_{T-1}
        if self.config.early_answer_weight > 0:
            early_log_probs = self.classifier(states.transpose(0, 1).flatten(0, 1))
            early_log_probs = early_log_probs.view(states.shape[1], states.shape[0], -1)
        valued = h if game else states  # a game's last move has a baseline too
        return Rollout(
            log_probs=log_probs,
            labels=labels,
            rewards=rewards,
            log_pi=log_pi.t(),  # (B, T-1)
            baselines=self.baseliner(valued if self.config.baseline_core else valued.detach()).t(),
            early_log_probs=early_log_probs,
        )

    def _play(self, h_t: torch.Tensor, played: list[torch.Tensor]) -> torch.Tensor:
        """A game's move sampled from the action network's softmax at ``h_t``, appended to
        ``played``; returned as scores ``(B, n_classes)`` whose highest is that move."""
        move = torch.multinomial(self.classifier(h_t).exp(), 1).squeeze(1)
        played.append(move)
        return F.one_hot(move, self.num_classes).float()

    def encode(self, observe: Observe, horizon: int) -> torch.Tensor:
        """The core states ``h_1 .. h_T`` ``(T, B, hidden_size)`` of one episode.

        ``observe(h_{t-1})`` acts and returns the next glimpse (see :meth:`forward`). The
        rectified core backpropagates through time by hand (:mod:`glimpse.agents.bptt`, the same
        gradient, faster); the LSTM, the convolutional glimpse network, or
        ``hand_written_bptt = False``, through autograd.
        """
        if self.paper_networks and self.hand_written_bptt:
            return glimpse_core_sequence(observe, horizon, self.glimpse_network, self.core.linear)
        state: tuple[torch.Tensor, ...] | None = None
        h = []
        for _ in range(horizon):
            glimpse, location = observe(None if state is None else state[0].detach())
            state = self.core(self.glimpse_network(glimpse, location), state)
            h.append(state[0])
        return torch.stack(h)

    def _observed(self, observations: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """The glimpse, flattened ``(B, k C g g)``, and its location ``(B, 2)`` as tensors."""
        device = self.classifier.linear.weight.device
        glimpse = torch.from_numpy(observations["glimpse"]).flatten(1).to(device)
        return glimpse, torch.from_numpy(observations["location"]).to(device)

    def _move_action(self, l_t: torch.Tensor, scores: torch.Tensor | None = None) -> np.ndarray:
        """The action that looks at ``l_t`` next: the class scores, read in a game (the
        paddle's move), are zeros where ``scores`` is None."""
        if scores is None:
            padding = np.zeros((len(l_t), self.num_classes), np.float32)
        else:
            padding = scores.detach().cpu().numpy().astype(np.float32)
        return np.concatenate([l_t.cpu().numpy(), padding], axis=1)

    def _answer_action(self, log_probs: torch.Tensor) -> np.ndarray:
        scores = log_probs.detach().cpu().numpy()
        return np.concatenate([np.zeros((len(scores), 2), np.float32), scores], axis=1)


def hybrid_loss(
    batch: Rollout,
    reinforce_weight: float = 1.0,
    reward_kind: str = "correct",
    rollouts_per_image: int = 1,
    early_answer_weight: float = 0.0,
    gae_lambda: float = 1.0,
) -> dict[str, torch.Tensor]:
    """The paper's hybrid loss, averaged over the batch.

    ``classification = -log p(y | h_T)``; ``baseline = sum_t (R - b_t)^2``;
    ``reinforce = -sum_t log pi(l_t | h_t) (R - b_t)``, the advantage a constant. Returns the
    terms and ``total = classification + baseline + reinforce_weight * reinforce``.

    With ``early_answer_weight = w > 0`` (not in the paper) the total also has
    ``w * early_classification``, the mean over ``t < T`` of ``-log p(y | h_t)``: every state,
    not only the last, is taught to say what the digit is, which is also what the location and
    baseline heads read.

    ``R`` is the environment's reward (1 for a correct answer) with ``reward_kind="correct"``,
    ``p(y | h_T)`` with ``"probability"`` or ``log p(y | h_T)`` with ``"log-likelihood"``. Both
    still tell good glimpses from lucky ones once nearly every answer is right, where the 0/1
    reward no longer does. The log-likelihood follows the gradient of the expected
    log-likelihood of the label (the variational view of Ba, Mnih and Kavukcuoglu, 2015) but is
    unbounded below: one wrong, confident answer outweighs many right ones. The probability is
    bounded like the paper's reward and is its expectation for an answer drawn from
    ``p(. | h_T)`` instead of the argmax: the luck of that draw taken out, as
    ``--move-credit expected`` does for PPO.

    With ``rollouts_per_image = K > 1`` the batch holds K episodes of each image side by side,
    and REINFORCE's advantage is ``R`` minus the mean ``R`` of the same image's other K - 1
    episodes (a baseline that knows how hard the image is; ``b_t`` is still fit, and logged).
    With ``gae_lambda < 1`` the advantage and the baseline's target are GAE's
    (:func:`_advantage`).
    """
    advantage, baseline = _advantage(
        final_reward(batch, reward_kind), batch.baselines, rollouts_per_image, gae_lambda
    )
    reinforce = -(batch.log_pi * advantage[:, : batch.log_pi.shape[1]]).sum(dim=1).mean()
    return _with_answer_terms(
        {"baseline": baseline, "reinforce": reinforce}, batch, reinforce_weight,
        early_answer_weight,
    )  # fmt: skip


def final_reward(batch: Rollout, reward_kind: str) -> torch.Tensor:
    """REINFORCE's reward ``R`` ``(B,)`` of each episode (see :func:`hybrid_loss`), a constant."""
    if reward_kind in ("probability", "log-likelihood"):
        reward = batch.log_probs.detach().gather(1, batch.labels[:, None]).squeeze(1)
        return reward.exp() if reward_kind == "probability" else reward
    return batch.rewards


def _with_answer_terms(
    terms: dict[str, torch.Tensor],
    batch: Rollout,
    reinforce_weight: float,
    early_answer_weight: float,
) -> dict[str, torch.Tensor]:
    """``terms`` (``baseline``, ``reinforce``) with the class's cross-entropy (and the early
    answers', with ``early_answer_weight > 0``) and their weighted ``total``."""
    classification = F.nll_loss(batch.log_probs, batch.labels)
    total = classification + terms["baseline"] + reinforce_weight * terms["reinforce"]
    terms = {"classification": classification, **terms}
    early = batch.early_log_probs
    if early_answer_weight > 0 and early is None:
        raise ValueError("early_answer_weight > 0 needs the rollout's early_log_probs.")
    if early_answer_weight > 0 and early.shape[1] > 0:  # none with a single glimpse
        terms["early_classification"] = F.nll_loss(
            early.flatten(0, 1), batch.labels.repeat_interleave(early.shape[1])
        )
        total = total + early_answer_weight * terms["early_classification"]
    return {"total": total, **terms}


@dataclass
class Collected:
    """What PPO keeps of a batch of episodes when it is played (:func:`ppo_loss`): the record
    to replay, the labels and rewards, the locations' log-probabilities then (B, T-1), the
    advantages and the baseline's targets (B, T-1), all constants, and how often it was used."""

    record: EpisodeRecord
    labels: torch.Tensor
    rewards: torch.Tensor
    old_log_pi: torch.Tensor
    advantage: torch.Tensor
    target: torch.Tensor
    std: float  # the location policy's sigma when they were played
    uses: int = 0

    def state(self) -> dict[str, Any]:
        """Tensors and numbers only, for a checkpoint (``--resume`` replays the same batch)."""
        glimpses, locations = zip(*self.record.observed, strict=True)
        tensors = {name: getattr(self, name) for name in _COLLECTED_TENSORS}
        return {
            "glimpses": torch.stack(glimpses), "locations": torch.stack(locations),
            "moves": list(self.record.moves), **tensors, "std": self.std, "uses": self.uses,
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Collected:
        observed = list(zip(state["glimpses"], state["locations"], strict=True))
        record = EpisodeRecord(observed, list(state["moves"]))
        tensors = {name: state[name] for name in _COLLECTED_TENSORS}
        return cls(record=record, **tensors, std=state["std"], uses=state["uses"])


_COLLECTED_TENSORS = ("labels", "rewards", "old_log_pi", "advantage", "target")


def collect(
    batch: Rollout, record: EpisodeRecord, reward_kind: str, rollouts_per_image: int,
    gae_lambda: float, std: float,
) -> Collected:  # fmt: skip
    """The :class:`Collected` of a batch of episodes just played (``batch``, ``record``) with
    the location policy's sigma ``std``."""
    reward = final_reward(batch, reward_kind)
    advantage, target = advantage_and_target(reward, batch.baselines, rollouts_per_image,
                                             gae_lambda)  # fmt: skip
    steps = batch.log_pi.shape[1]
    observed = [(glimpse.detach(), where.detach()) for glimpse, where in record.observed]
    kept = EpisodeRecord(observed, [move.detach() for move in record.moves])
    return Collected(
        record=kept,
        labels=batch.labels,
        rewards=batch.rewards,
        old_log_pi=batch.log_pi.detach(),
        advantage=advantage[:, :steps],
        target=target.expand_as(batch.baselines).detach(),
        std=std,
    )


def ppo_loss(
    batch: Rollout,
    collected: Collected,
    clip: float = 0.2,
    reinforce_weight: float = 1.0,
    early_answer_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """:func:`hybrid_loss` with PPO's clipped objective in REINFORCE's place, for ``batch``,
    the episodes of ``collected`` played again with today's weights (:meth:`RAM.replay`).

    ``reinforce = -sum_t min(r_t A_t, clip(r_t, 1 - clip, 1 + clip) A_t)``, mean over the
    batch, with ``r_t = pi(l_t | h_t) / pi_then(l_t | h_t)`` and ``A_t`` the advantage when the
    episodes were played; ``baseline = sum_t (b_t - target_t)^2`` against those targets. At the
    first use ``r_t = 1``, and the gradient is REINFORCE's.
    """
    # exp of a log-ratio clamped to +-20: with sigma 0.05 a mean that moved 0.7 would give
    # exp(100), inf in float32 (and inf * 0 = NaN); past the clip range its value is moot
    ratio = (batch.log_pi - collected.old_log_pi).clamp(-20.0, 20.0).exp()
    advantage = collected.advantage
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip)
    surrogate = torch.minimum(ratio * advantage, clipped * advantage)
    baseline = F.mse_loss(batch.baselines, collected.target, reduction="none").sum(dim=1).mean()
    terms = {"baseline": baseline, "reinforce": -surrogate.sum(dim=1).mean()}
    terms = _with_answer_terms(terms, batch, reinforce_weight, early_answer_weight)
    terms["clipped"] = ((ratio - 1.0).abs() > clip).float().mean()  # logged: how far it moved
    return terms


def game_loss(
    batch: Rollout,
    reinforce_weight: float = 1.0,
    rollouts_per_image: int = 1,
    gae_lambda: float = 1.0,
    entropy_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """The loss of a game (:mod:`glimpse.catch`): REINFORCE on everything the agent does.

    ``moves = -sum_t log pi(a_t | h_t) A_t`` over the paddle's moves ``a_1 .. a_T`` (trains the
    action, core and glimpse networks, as the class's cross-entropy does in a still task);
    ``reinforce = -sum_{t<T} log pi(l_t | h_t) A_t`` over the locations, as in
    :func:`hybrid_loss`; ``baseline = sum_t (b_t - target_t)^2``; ``entropy``, the move
    policy's entropy, mean over steps and games. ``R`` is 1 for a catch, else 0, and
    ``A_t = R - b_t`` (the paper) or GAE's (``gae_lambda < 1``, :func:`_advantage`). Returns the
    terms and ``total = moves + baseline + reinforce_weight * reinforce - entropy_weight * T *
    entropy``. With ``rollouts_per_image = K > 1`` the K games that start alike are each
    other's baseline.
    """
    if batch.move_log_pi is None or batch.move_entropy is None:
        raise ValueError("game_loss needs a game's rollout (its move_log_pi and move_entropy).")
    advantage, baseline = _advantage(
        batch.rewards, batch.baselines, rollouts_per_image, gae_lambda
    )
    moves = -(batch.move_log_pi * advantage).sum(dim=1).mean()
    reinforce = -(batch.log_pi * advantage[:, : batch.log_pi.shape[1]]).sum(dim=1).mean()
    entropy = batch.move_entropy.mean()
    total = moves + baseline + reinforce_weight * reinforce
    if entropy_weight > 0:
        total = total - entropy_weight * batch.move_entropy.sum(dim=1).mean()
    return {"total": total, "moves": moves, "baseline": baseline, "reinforce": reinforce,
            "entropy": entropy}  # fmt: skip


def _advantage(
    final_reward: torch.Tensor,
    baselines: torch.Tensor,
    rollouts_per_image: int = 1,
    gae_lambda: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE's advantage ``A_t`` ``(B, steps)`` (a constant) and the baseline's loss
    ``sum_t (b_t - target_t)^2`` (mean over the batch), for final rewards ``(B,)`` and the
    baseline network's ``b_t`` ``(B, steps)``.

    ``A_t = R - b_t`` and ``target_t = R`` with ``gae_lambda = 1``. Below 1, GAE(lambda) with
    the reward only at the end and no discount: ``delta_t = b_{t+1} - b_t`` (the last
    ``R - b_T``), ``A_t = sum_k lambda^k delta_{t+k}``, ``target_t = A_t + b_t``. With
    ``rollouts_per_image = K > 1``, ``A_t = R`` minus the mean ``R`` of the same image's other
    K - 1 episodes, and ``target_t = R``.
    """
    advantage, target = advantage_and_target(final_reward, baselines, rollouts_per_image,
                                             gae_lambda)  # fmt: skip
    baseline = F.mse_loss(baselines, target.expand_as(baselines), reduction="none")
    return advantage, baseline.sum(dim=1).mean()


def advantage_and_target(
    final_reward: torch.Tensor,
    baselines: torch.Tensor,
    rollouts_per_image: int = 1,
    gae_lambda: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_advantage`'s ``A_t`` ``(B, steps)`` and the baseline's targets (``(B, steps)``,
    or ``(B, 1)`` where the same at every step), both constants."""
    reward = final_reward[:, None]  # (B, 1)
    values = baselines.detach()
    if rollouts_per_image > 1:
        per_image = final_reward.view(-1, rollouts_per_image)  # (B / K, K)
        others = (per_image.sum(1, keepdim=True) - per_image) / (rollouts_per_image - 1)
        advantage = (reward - others.reshape(-1, 1)).expand_as(values)  # the same at every step
    elif gae_lambda == 1.0:
        advantage = reward - values
    else:
        delta = torch.cat([values[:, 1:], reward], dim=1) - values
        advantage = torch.empty_like(delta)
        running = torch.zeros_like(reward[:, 0])
        for t in reversed(range(delta.shape[1])):
            running = delta[:, t] + gae_lambda * running
            advantage[:, t] = running
    gae = rollouts_per_image == 1 and gae_lambda < 1
    target = advantage + values if gae else reward
    return advantage.detach(), target.detach()


class RAMPolicy:
    """RAM as an :class:`glimpse.envs.evaluation.Policy`: mean locations, or sampled ones."""

    def __init__(self, model: RAM, horizon: int, device: torch.device, sample: bool = False):
        self.model, self.horizon, self.device, self.sample = model, horizon, device, sample

    def start(self, num_envs: int) -> None:
        self.state: tuple[torch.Tensor, ...] | None = None
        self.t = 0

    @torch.no_grad()
    def act(self, observations: dict[str, np.ndarray]) -> np.ndarray:
        last = self.t == self.horizon - 1
        action, self.state = self.model.step(observations, self.state, last, self.sample)
        self.t += 1
        return action


class RAMPredictor:
    """RAM as it would be deployed: whole episodes inside the model, with no environment.

    ``predict(images)`` runs the episode: read the glimpse at ``l_{t-1}``, update the core,
    move to the mean location ``mu_t`` (the location network's answer without exploration
    noise), and after ``T`` glimpses answer. It computes exactly what :class:`RAMPolicy` does
    through the environment (the same operations on the same numbers;
    ``tests/test_predict.py`` checks answers and locations), without the environment's
    bookkeeping or the copies to and from numpy at each glimpse.

    A few images at a time (batch x scales at most 8 on a CPU, the deployed case) are read
    from their summed-area tables or, on large canvases, from their pixels
    (:meth:`GlimpseSensor.frame`), so that an answer's cost stops growing with the canvas;
    larger batches from the tables, built once per batch. With
    the paper's networks the few images' episode runs as one function compiled by
    TorchScript (:func:`compiled_episode`): a glimpse is some 25 small tensor operations, and
    at batch 1 their cost in Python, not their arithmetic, was most of the episode's time.
    ``compile = False`` turns that off.

    Build one from a run with :func:`glimpse.agents.runs.load_predictor`::

        predictor = load_predictor("results/cluttered-60-ram-seed1")
        classes, locations = predictor.predict(images)  # uint8 (B, C, H, W) or (B, H, W)
    """

    def __init__(
        self, model: RAM, sensor: GlimpseSensor, glimpses: int, first_location: str = "random"
    ) -> None:
        self.model, self.sensor, self.glimpses = model.eval(), sensor, glimpses
        self.first_location = first_location
        self.compile = True

    @torch.inference_mode()
    def predict(
        self,
        images: np.ndarray | torch.Tensor,
        first_locations: np.ndarray | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Classes ``(B,)`` and the ``T`` locations looked at ``(B, T, 2)`` for ``images``.

        ``images``: ``uint8`` (0..255) or floating (0..1) pixels, ``(B, C, H, W)``, or
        ``(B, H, W)`` for one channel. ``first_locations`` ``(B, 2)`` in ``[-1, 1]``: where the
        first glimpse is taken; by default the canvas centre if the run was trained with
        ``first_location="centre"``, else uniform over the canvas (from ``generator``), as in
        training.
        """
        log_probs, locations = self.episode(images, first_locations, generator)
        return log_probs.argmax(dim=1), locations

    @torch.inference_mode()
    def episode(
        self,
        images: np.ndarray | torch.Tensor,
        first_locations: np.ndarray | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        locations: np.ndarray | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`predict`, with the class log-probabilities ``(B, n_classes)`` in place of the
        classes. ``locations`` ``(B, T, 2)`` or ``(T, 2)``, if given, replace the learned ones:
        the model looks where it is told (every glimpse, the first included) and answers from
        what it saw, which measures what learning where to look is worth."""
        pixels = _pixels(images)
        device = self.model.classifier.linear.weight.device
        batch, sensor = pixels.shape[0], self.sensor
        few = batch * sensor.num_scales <= SLICED_READ_PATCHES and device.type == "cpu"
        if few:
            framed = sensor.frame(pixels.to(device), self.glimpses)
            read = functools.partial(sensor.read_framed, framed)
        else:
            read = functools.partial(sensor.read, sensor.integral(pixels.to(device)))
        told = None if locations is None else self._told(batch, locations).to(device)
        if told is not None:
            location = told[:, 0]
        elif first_locations is not None:
            location = torch.as_tensor(first_locations, dtype=torch.float32, device=device)
        elif self.first_location == "centre":
            location = torch.zeros(batch, 2, device=device)
        else:
            location = torch.rand(batch, 2, generator=generator).mul_(2.0).sub_(1.0).to(device)
        compiled = compiled_episode() if few and self.compile and told is None else None
        if compiled is not None and self.model.paper_networks:
            return self._compiled(compiled, framed, location)
        model, visited = self.model, [location]
        state: tuple[torch.Tensor, ...] | None = None
        for t in range(self.glimpses):
            glimpse = read(location).flatten(1)
            state = model.core(model.glimpse_network(glimpse, location), state)
            if t == self.glimpses - 1:
                break
            location = (model.locator.mu(state[0]).clamp(-1.0, 1.0) if told is None
                        else told[:, t + 1])  # fmt: skip
            visited.append(location)
        assert state is not None
        return model.classifier(state[0]), torch.stack(visited, dim=1)

    def _told(self, batch: int, locations: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Told locations ``(B, T, 2)`` or ``(T, 2)`` as ``(B, T, 2)`` in ``[-1, 1]``, checked."""
        locations = torch.as_tensor(locations, dtype=torch.float32)
        one_per_image = locations.ndim == 3 and locations.shape[0] in (batch, 1)
        if locations.shape[-2:] != (self.glimpses, 2) or not (locations.ndim == 2 or one_per_image):
            raise ConfigError(
                f"locations must have shape ({batch}, {self.glimpses}, 2) or "
                f"({self.glimpses}, 2): one (x, y) per glimpse; got {tuple(locations.shape)}."
            )
        return locations.expand(batch, self.glimpses, 2).clamp(-1.0, 1.0)

    def _compiled(
        self, episode: Any, framed: FramedImages, location: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model, sensor = self.model, self.sensor
        net, hidden = model.glimpse_network, model.locator.hidden
        return episode(  # type: ignore[no-any-return]
            framed.frame, framed.from_pixels, location, framed.block_weights,
            list(sensor.patch_sizes), list(sensor.block_sizes), framed.height, framed.width,
            framed.margin, self.glimpses, model.core.hidden_size,
            net.what.weight, net.what.bias, net.where.weight, net.where.bias,
            net.combine.weight, net.combine.bias, model.core.linear.weight, model.core.linear.bias,
            None if hidden is None else hidden.weight, None if hidden is None else hidden.bias,
            model.locator.mean.weight, model.locator.mean.bias,
            model.classifier.linear.weight, model.classifier.linear.bias,
        )  # fmt: skip


def _pixels(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Images ``(B, C, H, W)`` or ``(B, H, W)`` as a ``(B, C, H, W)`` tensor."""
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = images.copy()  # torch wants writable memory (the fixed test sets are not)
    pixels = torch.as_tensor(images)
    return pixels[:, None] if pixels.ndim == 3 else pixels


def few_images_episode(
    frame: torch.Tensor,
    from_pixels: bool,
    location: torch.Tensor,
    block_weights: torch.Tensor,
    sides: list[int],
    blocks: list[int],
    height: int,
    width: int,
    margin: int,
    glimpses: int,
    hidden_size: int,
    what_weight: torch.Tensor,
    what_bias: torch.Tensor,
    where_weight: torch.Tensor,
    where_bias: torch.Tensor,
    combine_weight: torch.Tensor,
    combine_bias: torch.Tensor,
    core_weight: torch.Tensor,
    core_bias: torch.Tensor,
    locator_hidden_weight: torch.Tensor | None,
    locator_hidden_bias: torch.Tensor | None,
    mean_weight: torch.Tensor,
    mean_bias: torch.Tensor,
    classifier_weight: torch.Tensor,
    classifier_bias: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`RAMPredictor.episode` with the rectified core, as one function of the weights:
    the same functions in the same order (:func:`glimpse.sensor.read_framed`,
    :func:`glimpse.agents.networks.glimpse_features`, :func:`rnn_core`, :func:`location_mean`),
    so that TorchScript can run the whole episode without Python between the operations."""
    locations = [location]
    h = torch.empty(0)
    for t in range(glimpses):
        glimpse = read_framed(frame, from_pixels, location, block_weights, sides, blocks,
                              height, width, margin).flatten(1)  # fmt: skip
        g_t = glimpse_features(glimpse, location, what_weight, what_bias, where_weight,
                               where_bias, combine_weight, combine_bias)  # fmt: skip
        h = rnn_core(g_t, None if t == 0 else h, core_weight, core_bias, hidden_size)
        if t == glimpses - 1:
            break
        location = location_mean(h, locator_hidden_weight, locator_hidden_bias, mean_weight,
                                 mean_bias).clamp(-1.0, 1.0)  # fmt: skip
        locations.append(location)
    log_probs = F.log_softmax(F.linear(h, classifier_weight, classifier_bias), dim=1)
    return log_probs, torch.stack(locations, dim=1)


@functools.lru_cache(maxsize=1)
def compiled_episode() -> Any:
    """:func:`few_images_episode` compiled by TorchScript, or ``None`` where it cannot be.

    TorchScript is deprecated (PyTorch 2.13 warns so) in favour of ``torch.compile``, which we
    measured at over twice eager's time for the networks' step at batch 1 (its per-call
    overhead on a CPU; a one-off trial, 2026-12-05, 2-core Intel Xeon), while TorchScript cut
    the episode's time by more than half in a one-off prototype on the same machine;
    ``python benchmarks/latency.py`` measures the result against the full-view models. Where a
    future PyTorch drops TorchScript, the eager path runs instead.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(few_images_episode)
    except Exception:  # any failure to compile: the eager path is the same maths
        return None
