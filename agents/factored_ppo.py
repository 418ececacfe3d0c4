"""PPO with a factored advantage: the class is judged by its own reward, the move by what follows.

Why: in a glimpse episode each action holds two decisions that act on different rewards. The
class chosen at step ``t`` earns that step's reward ``r_t`` and changes nothing after it (the
next glimpse depends only on where the agent moves). The move chosen at step ``t`` earns
nothing at ``t`` and decides every later reward. Plain PPO gives both one advantage, GAE's
``A_t``, so the class is also credited with the luck of every later glimpse and class sample,
and the move with the luck of this step's class sample: noise that each decision must average
away.

Here the value network has a second head, ``c(s_t)``, fit to ``r_t`` by squared error (the
expected reward of this step's answer), and with SB3's GAE advantage ``A_t`` (``gamma``,
``lambda`` and the value ``V`` as in PPO):

* the class's advantage is ``A^class_t = r_t - c(s_t)``: only its own reward, less what the
  state led to expect;
* the move's advantage is ``A^move_t = A_t - A^class_t``, which is
  ``gamma V(s_{t+1}) - (V(s_t) - c(s_t)) + gamma lambda A_{t+1}``: the rewards that follow,
  less what was expected of them (at the last step the move does nothing, so it is 0).

The two are unbiased in the same sense as ``A_t`` (each subtracts a baseline that depends only
on the state), and their sum is ``A_t``. PPO's clipped surrogate is applied to each group of
action components with its own probability ratio and its own advantage (each normalised per
minibatch), and the two are added. The value loss gets ``c``'s squared error added; the
entropy bonus is PPO's. It needs the discrete action space (``MultiDiscrete([G, G, classes])``:
the class is the third component) and no stop action (stopping changes this step's reward).

The update encodes each glimpse once per minibatch, not once for every later step that has it
in its history: the steps of one episode (a *segment*: the episode, or its part inside this
rollout) read one history, the segment's last, each up to its own step
(:meth:`glimpse.agents.extractors.GlimpseHistoryExtractor.from_histories`), which gives the
same features. How
much that saves depends on how the rollout is cut into minibatches: ``minibatches="steps"``
shuffles steps one by one, as SB3 does, so a minibatch holds a quarter of each segment's steps
(with 4 minibatches per rollout); ``"episodes"`` shuffles whole segments, so each holds all
of them and the glimpse network runs once per glimpse: the same loss in expectation, but the
steps of a minibatch are then correlated, as in sb3-contrib's RecurrentPPO.

``move_credit="expected"`` takes one more source of noise out of the move's advantage. The
rewards that follow a move depend on the glimpses it leads to, but also on the luck of each
later class *sample*: at a state where the answer is right with probability 0.7, the sampled
answer earns 1 or 0. The class changes nothing after it, so the expected reward of each later
step is ``c(s_{t+k})``, and the move can be credited with that instead:

* ``A^move_t = A_t - sum_{l >= 0} (gamma lambda)^l A^class_{t+l}`` (within the episode and
  the rollout, as GAE's own sum), which is GAE's advantage with every reward ``r`` replaced by
  ``c(s)``: how the expected answers changed, not how the sampled ones happened to fare.

This removes the class samples' variance (about ``p (1 - p)`` for each later step) at the cost
of a bias where ``c`` is wrong; ``V`` and ``c`` are still fit to the rewards themselves.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.utils import explained_variance
from torch import nn
from torch.nn import functional as F

from glimpse.errors import ConfigError

CLASS_COMPONENT = 2  # MultiDiscrete([G, G, classes]): column, row, class


class FactoredPolicy(MultiInputActorCriticPolicy):
    """SB3's actor-critic policy with a second value head ``c(s)``, the expected step reward."""

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        self.reward_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        if self.ortho_init:
            self.reward_net.apply(partial(self.init_weights, gain=1))
        # SB3 built the optimiser over the parameters it knew of: build it again with c's.
        self.optimizer = self.optimizer_class(
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def evaluate_factored(
        self,
        observations: dict[str, torch.Tensor],
        actions: torch.Tensor,
        source: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``V(s)``, ``c(s)``, the log-probabilities of the class and of the move (every other
        component), and the entropy of the whole action, each ``(N,)``.

        With ``source`` ``(N,)``, the history observations hold fewer rows and sample ``i``
        reads row ``source[i]`` up to its own step (see the module docstring).
        """
        if source is None:
            features = self.extract_features(observations)
        else:
            extractors = (
                [self.features_extractor]
                if self.share_features_extractor
                else [self.pi_features_extractor, self.vf_features_extractor]
            )
            each = [
                extractor.from_histories(  # type: ignore[operator]
                    observations["history_glimpses"], observations["history_locations"],
                    observations["step"], source,
                )
                for extractor in extractors
            ]  # fmt: skip
            features = each[0] if self.share_features_extractor else tuple(each)
        if self.share_features_extractor:
            latent_pi, latent_vf = self.mlp_extractor(features)
        else:
            latent_pi = self.mlp_extractor.forward_actor(features[0])
            latent_vf = self.mlp_extractor.forward_critic(features[1])
        distribution = self._get_action_dist_from_latent(latent_pi)
        components = zip(distribution.distribution, actions.long().unbind(dim=1), strict=True)
        log_probs = torch.stack([d.log_prob(a) for d, a in components], dim=1)
        class_log_prob = log_probs[:, CLASS_COMPONENT]
        move_log_prob = log_probs[:, :CLASS_COMPONENT].sum(dim=1)  # the column and the row
        values = self.value_net(latent_vf).flatten()
        expected_rewards = self.reward_net(latent_vf).flatten()
        return values, expected_rewards, class_log_prob, move_log_prob, distribution.entropy()


NEEDS_DISCRETE_ACTIONS = (
    "--advantage factored needs the discrete action space without a stop action "
    "(MultiDiscrete([G, G, classes])): leave --action-type at discrete and --allow-stop off, or "
    "use --advantage shared."
)


MINIBATCHES = ("steps", "episodes")
MOVE_CREDITS = ("rewards", "expected")


class FactoredPPO(PPO):
    """SB3's PPO whose update uses the factored advantage of the module docstring.

    Rollouts, GAE, schedules, saving and loading are SB3's; only :meth:`train` differs.
    ``minibatches`` (``"steps"`` or ``"episodes"``) says how a rollout is cut into minibatches,
    ``move_credit`` (``"rewards"`` or ``"expected"``) what the move is credited with (module
    docstring); the other arguments are PPO's.
    """

    def __init__(
        self, *args: Any, minibatches: str = "steps", move_credit: str = "rewards", **kwargs: Any
    ) -> None:
        for name, value, choices in (
            ("minibatches", minibatches, MINIBATCHES),
            ("move_credit", move_credit, MOVE_CREDITS),
        ):
            if value not in choices:
                raise ConfigError(f"{name}={value!r}: choose one of {', '.join(choices)}.")
        # saved in the zip with SB3's other attributes
        self.minibatches, self.move_credit = minibatches, move_credit
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        space = self.action_space
        if not (isinstance(space, spaces.MultiDiscrete) and len(space.nvec) == 3):
            raise ConfigError(f"{NEEDS_DISCRETE_ACTIONS} This environment's is {space}.")
        if not isinstance(self.policy, FactoredPolicy):
            raise ConfigError("FactoredPPO needs its FactoredPolicy (pass policy=FactoredPolicy).")
        if self.target_kl is not None or self.clip_range_vf is not None:
            raise ConfigError("FactoredPPO does not implement target_kl or clip_range_vf.")

    def _rollout_in_order(self) -> dict[str, Any]:
        """The last rollout as flat tensors, slot by slot in time order (SB3's own layout)."""
        buffer = self.rollout_buffer
        flat = buffer.swap_and_flatten
        # A step ended its episode if the next one starts a new episode (the step after the
        # rollout's last is the environment's current one).
        starts = np.concatenate([buffer.episode_starts[1:], self._last_episode_starts[None]])
        arrays = {
            "actions": flat(buffer.actions),
            "rewards": flat(buffer.rewards).reshape(-1),
            "advantages": flat(buffer.advantages).reshape(-1),
            "returns": flat(buffer.returns).reshape(-1),
            "episode_ends": flat(starts.astype(np.float32)).reshape(-1),
        }
        rollout: dict[str, Any] = {k: buffer.to_torch(v) for k, v in arrays.items()}
        rollout["observations"] = {
            key: buffer.to_torch(flat(value)) for key, value in buffer.observations.items()
        }
        # The last step of each step's segment: of its episode, or of the slot's rollout.
        ends = rollout["episode_ends"].view(buffer.n_envs, buffer.buffer_size) > 0
        ends[:, -1] = True
        index = torch.arange(ends.numel(), device=ends.device).view(ends.shape)
        last = torch.where(ends, index, ends.numel()).flip(1).cummin(1).values.flip(1)
        rollout["segment_ends"] = last.reshape(-1)
        return rollout

    def _minibatches(self, rollout: dict[str, Any], shuffle: bool) -> list[torch.Tensor]:
        """Indices of each minibatch: steps shuffled one by one, or whole segments shuffled
        (``minibatches="episodes"``), or all in order (``shuffle=False``)."""
        segment_ends = rollout["segment_ends"]
        size = len(segment_ends)
        if not shuffle:
            order = torch.arange(size)
        elif self.minibatches == "steps":
            order = torch.randperm(size)
        else:  # sort the steps by a random rank of their segment, keeping time order within
            rank = torch.randperm(size)[segment_ends.cpu()]
            order = torch.sort(rank * size + torch.arange(size), stable=True).indices
        return list(order.to(self.device).split(self.batch_size))

    def _evaluate(
        self, rollout: dict[str, Any], batch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`FactoredPolicy.evaluate_factored` of the steps ``batch``, each segment's
        history passed once (its last step's), so each glimpse is encoded once."""
        policy: FactoredPolicy = self.policy  # type: ignore[assignment]
        rows, source = torch.unique(rollout["segment_ends"][batch], return_inverse=True)
        observations = {
            key: value[rows] if key.startswith("history_") else value[batch]
            for key, value in rollout["observations"].items()
        }
        return policy.evaluate_factored(observations, rollout["actions"][batch], source)

    def factored_rollout(self) -> dict[str, Any]:
        """The last rollout (:meth:`_rollout_in_order`) with what the update needs from the
        policy that collected it (nothing has changed it yet): ``old_class`` and ``old_move``
        (the log-probabilities of what it did), ``class_advantages``, ``move_advantages`` and
        ``moves`` (False at an episode's last step, where the move does nothing)."""
        rollout = self._rollout_in_order()
        with torch.no_grad():
            parts = [
                self._evaluate(rollout, batch)
                for batch in self._minibatches(rollout, shuffle=False)
            ]
        columns = (torch.cat(column) for column in zip(*parts, strict=True))
        _, expected_rewards, rollout["old_class"], rollout["old_move"], _ = columns
        class_advantages = rollout["rewards"] - expected_rewards
        rollout["class_advantages"] = class_advantages
        if self.move_credit == "expected":
            class_advantages = self._discounted_sums(class_advantages, rollout["episode_ends"])
        rollout["move_advantages"] = rollout["advantages"] - class_advantages
        rollout["moves"] = rollout["episode_ends"] == 0
        return rollout

    def _discounted_sums(self, values: torch.Tensor, episode_ends: torch.Tensor) -> torch.Tensor:
        """``sum_{l >= 0} (gamma lambda)^l values_{t+l}`` over the rest of each step's episode
        inside the rollout (flat, slot by slot in time order), as GAE sums its terms."""
        shape = (self.rollout_buffer.n_envs, self.rollout_buffer.buffer_size)
        values, continues = values.view(shape), (episode_ends == 0).view(shape)
        sums = torch.empty_like(values)
        running = torch.zeros_like(values[:, 0])
        for t in reversed(range(shape[1])):  # the last step of the rollout starts afresh
            running = values[:, t] + self.gamma * self.gae_lambda * continues[:, t] * running
            sums[:, t] = running
        return sums.reshape(-1)

    def train(self) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        rollout = self.factored_rollout()
        logs: dict[str, list[float]] = {}
        for _ in range(self.n_epochs):
            for batch in self._minibatches(rollout, shuffle=True):
                loss, terms = self._minibatch_loss(rollout, batch, clip_range)
                self.policy.optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
                for key, value in terms.items():
                    logs.setdefault(key, []).append(value)
            self._n_updates += 1
        for key, values in logs.items():
            self.logger.record(f"train/{key}", np.mean(values))
        buffer = self.rollout_buffer
        variance = explained_variance(buffer.values.flatten(), buffer.returns.flatten())
        self.logger.record("train/explained_variance", variance)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)

    def _minibatch_loss(
        self, rollout: dict[str, Any], batch: torch.Tensor, clip_range: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of the minibatch ``batch`` (indices into ``rollout``) and what to log
        (under SB3's names, and ``reward_loss`` for ``c``)."""
        needed = ("old_class", "old_move", "class_advantages", "move_advantages", "moves",
                  "returns", "rewards")  # fmt: skip
        at = {key: rollout[key][batch] for key in needed}
        values, expected_rewards, class_log_prob, move_log_prob, entropy = self._evaluate(
            rollout, batch
        )
        class_log_ratio = class_log_prob - at["old_class"]
        move_log_ratio = move_log_prob - at["old_move"]
        class_ratio, move_ratio = class_log_ratio.exp(), move_log_ratio.exp()
        policy_loss = _clipped_surrogate(
            class_ratio, at["class_advantages"], clip_range
        ) + _clipped_surrogate(move_ratio, at["move_advantages"], clip_range, at["moves"])
        value_loss = F.mse_loss(values, at["returns"])
        reward_loss = F.mse_loss(expected_rewards, at["rewards"])
        entropy_loss = -entropy.mean()
        loss = (
            policy_loss + self.ent_coef * entropy_loss + self.vf_coef * (value_loss + reward_loss)
        )
        with torch.no_grad():
            log_ratio = class_log_ratio + move_log_ratio  # of the whole action
            clipped = ((class_ratio - 1).abs() > clip_range) | ((move_ratio - 1).abs() > clip_range)
            terms = {
                "policy_gradient_loss": policy_loss.item(),
                "value_loss": value_loss.item(),
                "reward_loss": reward_loss.item(),
                "entropy_loss": entropy_loss.item(),
                "approx_kl": (log_ratio.exp() - 1 - log_ratio).mean().item(),
                "clip_fraction": clipped.float().mean().item(),
            }
        return loss, terms


def _clipped_surrogate(
    ratio: torch.Tensor, advantages: torch.Tensor, clip: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """PPO's clipped surrogate loss, averaged over the minibatch, with the advantages
    normalised over it; where ``mask`` is False the decision had no effect and adds 0."""
    if mask is None:
        mask = torch.ones_like(advantages, dtype=torch.bool)
    chosen = advantages[mask]
    if len(chosen) > 1:
        advantages = (advantages - chosen.mean()) / (chosen.std() + 1e-8)
    clipped = torch.clamp(ratio, 1 - clip, 1 + clip)
    surrogate = torch.min(ratio * advantages, clipped * advantages)
    return -(surrogate * mask).sum() / len(mask)
