"""The Recurrent Attention Model (Mnih, Heess, Graves, Kavukcuoglu, 2014) and its hybrid loss.

One ``nn.Module`` per component of the paper, with the paper's symbols:

* glimpse network ``g_t = f_g(x_t, l_{t-1})`` (:class:`envs.networks.GlimpseNetwork`, shared with
  the PPO features extractor);
* core network ``h_t = f_h(h_{t-1}, g_t)``: the paper's rectified RNN or an LSTM;
* location network ``l_t ~ N(f_l(h_t), sigma^2 I)``: a Gaussian with fixed ``sigma``;
* action network ``a = softmax(f_a(h_T))``: the class, read after the last glimpse;
* baseline network ``b_t = f_b(h_t)``: the expected reward, to reduce REINFORCE's variance.

What gradients flow where (tested in ``tests/test_ram.py``):

* The classifier's cross-entropy trains the action, core and glimpse networks.
* REINFORCE trains only the location network: it reads ``h_t.detach()``, and the sampled
  location is a constant (no gradient reaches the classifier through where the agent looked).
  With ``reinforce_core=True`` it reads ``h_t`` itself, so REINFORCE also trains the core and
  glimpse networks, as the paper's gradient over all parameters ``theta`` does: the state
  then learns to serve where to look next, not only what the digit is.
* The baseline is fit to the reward by squared error and also reads ``h_t.detach()``.
* The log-probability is that of the location actually sent to the environment (the raw
  Gaussian sample; the environment clips it to the image, which is part of its dynamics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from envs.episodes import GlimpseEpisodes
from envs.networks import GlimpseNetwork
from glimpse.config import check_choices, option
from glimpse.errors import ConfigError

CORES = ("rnn", "lstm")
REWARDS = ("correct", "log-likelihood")


@dataclass(frozen=True)
class RAMConfig:
    """Sizes of the networks, the location policy's noise and what it learns from."""

    core: str = option("rnn", "Core network: the paper's rectified RNN or an LSTM.", CORES)
    hidden_size: int = option(256, "Units of the core state h_t.")
    glimpse_units: int = option(128, "Units of h_g (what) in the glimpse network.")
    location_units: int = option(128, "Units of h_l (where) in the glimpse network.")
    glimpse_out_units: int = option(256, "Units of g_t.")
    location_std: float = option(0.05, "Standard deviation sigma of the location policy.")
    reinforce_core: bool = option(
        False, "REINFORCE also trains the core and glimpse networks (the location head reads h_t, "
        "not h_t.detach())."
    )  # fmt: skip
    reward: str = option(
        "correct", "REINFORCE's reward: 1 for a correct answer, else 0 (the paper), or "
        "log p(y | glimpses), the classifier's log-likelihood of the true class.", REWARDS
    )  # fmt: skip

    def __post_init__(self) -> None:
        check_choices(self)
        if self.location_std <= 0:
            raise ConfigError(f"location_std={self.location_std} must be positive.")


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
        if state is None:  # h_0 = 0: only W_gh g_1, half the first step's core product
            w_gh = self.linear.weight[:, self.hidden_size :]
            return (torch.relu(F.linear(g_t, w_gh, self.linear.bias)),)
        (h_prev,) = state
        return (torch.relu(self.linear(torch.cat([h_prev, g_t], dim=1))),)


class LocationNetwork(nn.Module):
    """``mu_t = tanh(W_l h_t)``, ``l_t ~ N(mu_t, sigma^2 I)``; tanh keeps the mean on the image."""

    def __init__(self, hidden_size: int, std: float) -> None:
        super().__init__()
        self.mean = nn.Linear(hidden_size, 2)
        self.std = std
        self._log_normaliser = 2 * (math.log(std) + 0.5 * math.log(2 * math.pi))

    def forward(self, h_t: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The location sent to the environment and its log-probability (no gradient via l_t)."""
        mu = torch.tanh(self.mean(h_t))  # (B, 2)
        l_t = (mu + self.std * torch.randn_like(mu)).detach() if sample else mu.detach()
        # log N(l_t; mu, std^2 I), written out (torch.distributions costs more than the maths)
        log_pi = -((l_t - mu) ** 2).sum(dim=1) / (2 * self.std**2) - self._log_normaliser
        return l_t, log_pi  # (B, 2), (B,)


class ActionNetwork(nn.Module):
    """``log softmax(W_a h_T)``: log-probabilities of the classes."""

    def __init__(self, hidden_size: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, num_classes)

    def forward(self, h_t: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.linear(h_t), dim=1)


class BaselineNetwork(nn.Module):
    """``b_t = W_b h_t``: the expected final reward given the state so far."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)

    def forward(self, h_t: torch.Tensor) -> torch.Tensor:
        return self.linear(h_t).squeeze(1)


@dataclass
class StepOutput:
    """What one RAM step produced: the action for the environment and what the loss needs."""

    action: np.ndarray  # (B, 2 + n_classes): location, then class scores
    log_pi: torch.Tensor | None  # (B,) log-probability of the location (None at the last step)
    baseline: torch.Tensor | None  # (B,) b_t (None at the last step)
    log_probs: torch.Tensor | None  # (B, n_classes) class log-probabilities (last step only)


@dataclass
class Rollout:
    """A batch of training episodes: what the hybrid loss needs."""

    log_probs: torch.Tensor  # (B, n_classes) class log-probabilities after the last glimpse
    labels: torch.Tensor  # (B,)
    rewards: torch.Tensor  # (B,) 1 for a correct answer, else 0
    log_pi: torch.Tensor  # (B, T-1) log-probabilities of the locations l_1 .. l_{T-1}
    baselines: torch.Tensor  # (B, T-1)


class RAM(nn.Module):
    """The Recurrent Attention Model; see the module docstring."""

    def __init__(self, glimpse_shape: tuple[int, ...], num_classes: int, config: RAMConfig) -> None:
        super().__init__()
        self.config, self.num_classes = config, num_classes
        self.glimpse_network = GlimpseNetwork(
            glimpse_shape,
            where_dim=2,
            what_units=config.glimpse_units,
            where_units=config.location_units,
            out_units=config.glimpse_out_units,
        )
        self.core = CoreNetwork(config.glimpse_out_units, config.hidden_size, config.core)
        self.locator = LocationNetwork(config.hidden_size, config.location_std)
        self.classifier = ActionNetwork(config.hidden_size, num_classes)
        self.baseliner = BaselineNetwork(config.hidden_size)

    def step(
        self,
        observations: dict[str, np.ndarray],
        state: tuple[torch.Tensor, ...] | None,
        last: bool,
        sample: bool,
    ) -> tuple[StepOutput, tuple[torch.Tensor, ...]]:
        """Reads one glimpse, updates the core, and acts: move (``last=False``) or answer.

        ``state`` is the core's state, ``None`` before the first glimpse.
        """
        device = self.classifier.linear.weight.device
        glimpse = torch.from_numpy(observations["glimpse"]).to(device)  # (B, k, C, g, g)
        location = torch.from_numpy(observations["location"]).to(device)  # (B, 2)
        g_t = self.glimpse_network(glimpse, location)  # (B, glimpse_out_units)
        state = self.core(g_t, state)
        h_t = state[0]  # (B, hidden_size)
        batch = h_t.shape[0]
        if last:
            log_probs = self.classifier(h_t)  # (B, n_classes)
            scores = log_probs.detach().cpu().numpy()
            action = np.concatenate([np.zeros((batch, 2), np.float32), scores], axis=1)
            return StepOutput(action, None, None, log_probs), state
        l_t, log_pi = self.locator(h_t if self.config.reinforce_core else h_t.detach(), sample)
        baseline = self.baseliner(h_t.detach())
        padding = np.zeros((batch, self.num_classes), np.float32)
        action = np.concatenate([l_t.cpu().numpy(), padding], axis=1)
        return StepOutput(action, log_pi, baseline, None), state

    def forward(self, episodes: GlimpseEpisodes) -> Rollout:
        """Runs one episode in every slot of ``episodes``, sampling locations, and collects it.

        (A training batch is a forward pass, so DistributedDataParallel can wrap the model.)
        """
        device = next(self.parameters()).device
        episodes.reset(np.ones(episodes.num_envs, bool))
        state: tuple[torch.Tensor, ...] | None = None
        horizon = episodes.config.glimpses
        log_pi, baselines = [], []
        for t in range(horizon):
            out, state = self.step(
                episodes.observations(), state, last=t == horizon - 1, sample=True
            )
            rewards, _, infos = episodes.step(out.action)
            if out.log_pi is not None:
                log_pi.append(out.log_pi)
                baselines.append(out.baseline)
        assert out.log_probs is not None
        empty = out.log_probs.new_zeros(episodes.num_envs, 0)
        return Rollout(
            log_probs=out.log_probs,
            labels=torch.from_numpy(infos["label"]).to(device),
            rewards=torch.from_numpy(rewards).to(device),
            log_pi=torch.stack(log_pi, dim=1) if log_pi else empty,
            baselines=torch.stack(baselines, dim=1) if baselines else empty,
        )


def hybrid_loss(
    batch: Rollout, reinforce_weight: float = 1.0, reward_kind: str = "correct"
) -> dict[str, torch.Tensor]:
    """The paper's hybrid loss, averaged over the batch.

    ``classification = -log p(y | h_T)``; ``baseline = sum_t (R - b_t)^2``;
    ``reinforce = -sum_t log pi(l_t | h_t) (R - b_t)``, the advantage a constant. Returns the
    terms and ``total = classification + baseline + reinforce_weight * reinforce``.

    ``R`` is the environment's reward (1 for a correct answer) with ``reward_kind="correct"``,
    or ``log p(y | h_T)`` with ``"log-likelihood"``: then REINFORCE follows the gradient of the
    expected log-likelihood of the label (the variational view of Ba, Mnih and Kavukcuoglu,
    2015), which still tells good glimpses from lucky ones once nearly every answer is right.
    """
    if reward_kind == "log-likelihood":
        final_reward = batch.log_probs.detach().gather(1, batch.labels[:, None]).squeeze(1)
    else:
        final_reward = batch.rewards
    reward = final_reward[:, None]  # (B, 1)
    advantage = (reward - batch.baselines).detach()  # (B, T-1)
    classification = F.nll_loss(batch.log_probs, batch.labels)
    baseline = F.mse_loss(batch.baselines, reward.expand_as(batch.baselines), reduction="none")
    baseline = baseline.sum(dim=1).mean()
    reinforce = -(batch.log_pi * advantage).sum(dim=1).mean()
    total = classification + baseline + reinforce_weight * reinforce
    return {
        "total": total,
        "classification": classification,
        "baseline": baseline,
        "reinforce": reinforce,
    }


class RAMPolicy:
    """RAM as an :class:`envs.evaluation.Policy`: mean locations, or sampled ones."""

    def __init__(self, model: RAM, horizon: int, device: torch.device, sample: bool = False):
        self.model, self.horizon, self.device, self.sample = model, horizon, device, sample

    def start(self, num_envs: int) -> None:
        self.state: tuple[torch.Tensor, ...] | None = None
        self.t = 0

    @torch.no_grad()
    def act(self, observations: dict[str, np.ndarray]) -> np.ndarray:
        last = self.t == self.horizon - 1
        out, self.state = self.model.step(observations, self.state, last, self.sample)
        self.t += 1
        return out.action
