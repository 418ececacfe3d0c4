"""RAM's learner: what the generic :class:`glimpse.agents.trainer.Trainer` trains for RAM (the
full-view baselines' learner is :class:`glimpse.agents.baselines.FullViewLearner`; PPO trains
with Stable-Baselines3's loop).

Next on the way down: :meth:`RAMLearner.loss` plays a batch of episodes with
:meth:`glimpse.agents.ram.RAM.forward` and hands them to :func:`glimpse.agents.ram.hybrid_loss`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from glimpse.agents import distributed
from glimpse.agents.ram import (
    RAM,
    Collected,
    EpisodeRecord,
    RAMConfig,
    RAMPolicy,
    RAMPredictor,
    Rollout,
    collect,
    game_loss,
    hybrid_loss,
    ppo_loss,
)
from glimpse.envs.episodes import GlimpseEpisodes
from glimpse.envs.evaluation import (
    Evaluation,
    TargetShare,
    Trajectories,
    evaluate,
    evaluation_episodes,
    first_locations,
)
from glimpse.envs.glimpse_env import make_episodes
from glimpse.errors import ConfigError

TOLD_LOCATIONS = ("random", "fixed")
"""Where :meth:`RAMLearner.evaluate_locations` can make a trained model look instead."""


class RAMLearner:
    """RAM trained on episodes of the batched glimpse environment: by :func:`hybrid_loss` on a
    still task, :func:`game_loss` in a game, :func:`ppo_loss` with ``location_learner="ppo"``.

    The training episodes are one :class:`GlimpseEpisodes` of ``batch_size`` slots on the train
    split (continuous actions: location, then class scores), seeded from ``seed``: every batch
    is a fresh set of canvases, and the episode counters are the data stream's whole state.
    With ``rollouts_per_image = K`` each run of K neighbouring slots shares its key, so they
    play the same canvas from the same first location and differ only in the sampled looks.

    In a game (``task="catch"``) the loss is :func:`game_loss` and evaluation plays the fixed
    games through the environment (:func:`evaluate`), the moves the action network's likeliest.
    """

    def __init__(
        self,
        env_settings: dict[str, Any],
        config: RAMConfig,
        batch_size: int,
        seed: int,
        device: torch.device,
        eval_episodes: int = 1000,
    ) -> None:
        if env_settings.get("allow_stop"):
            raise ConfigError("RAM takes a fixed number of glimpses: leave allow_stop off.")
        if env_settings.get("class_reward", "correct") != "correct":
            raise ConfigError(
                "RAM computes REINFORCE's reward itself: leave --class-reward at 'correct' and "
                "use --reward log-likelihood for the log-likelihood reward."
            )
        self.env_settings = {**env_settings, "action_type": "continuous"}
        self.device, self.eval_episodes, self.seed = device, eval_episodes, seed
        self.rollouts_per_image = config.rollouts_per_image
        self.train_episodes = make_episodes(batch_size, "train", False, self.env_settings)
        self.train_episodes.seed(self._stream_keys())
        torch.manual_seed(seed)  # the same initial weights in every process
        task = self.train_episodes.task
        self.game = self.train_episodes.dynamic
        if self.game:
            _check_game_config(config)
        elif config.entropy_weight > 0:
            raise ConfigError(
                "--entropy-weight keeps a game's paddle exploring; a still task's class is "
                "trained by its cross-entropy: leave it at 0."
            )
        self.horizon = self.train_episodes.config.glimpses
        self.model = RAM(self.train_episodes.glimpse_shape, task.num_classes, config).to(device)
        if config.location_learner == "ppo" and distributed.world_size() > 1:
            raise ConfigError(
                "--location-learner ppo replays its episodes outside DistributedDataParallel: "
                "train it in one process (leave out torchrun)."
            )
        self.forward_model = distributed.wrap(self.model, device)
        if distributed.world_size() > 1:
            torch.manual_seed(seed + 7919 * distributed.rank())  # different location samples
        self._eval: dict[str, GlimpseEpisodes] = {}
        self._collected: Collected | None = None  # --location-learner ppo: the last batch

    def _stream_keys(self) -> np.ndarray:
        """The training stream's slot keys: from the seed, and the process rank under torchrun."""
        rank = distributed.rank()
        rng = np.random.default_rng(self.seed if rank == 0 else [self.seed, rank])
        images = self.train_episodes.num_envs // self.rollouts_per_image
        keys = rng.integers(0, 2**63, images, dtype=np.int64)
        return np.repeat(keys, self.rollouts_per_image).astype(np.uint64)

    @property
    def task(self):
        return self.train_episodes.task

    @property
    def train_size(self) -> int:
        return self.task.split_size("train")

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """One group at ``lr``; with ``location_lr_factor != 1`` the location network in a
        group of its own at ``lr * location_lr_factor``."""
        factor = self.model.config.location_lr_factor
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if factor == 1.0:
            return [{"params": trainable, "lr": lr}]
        located = {id(p) for p in self.model.locator.parameters()}
        return [
            {"params": [p for p in trainable if id(p) not in located], "lr": lr},
            {"params": [p for p in trainable if id(p) in located], "lr": lr * factor},
        ]

    def loss(self, batch_size: int, progress: float = 0.0) -> dict[str, torch.Tensor]:
        if batch_size != self.train_episodes.num_envs:
            raise ValueError(
                f"RAMLearner plays batches of {self.train_episodes.num_envs} episodes, built at "
                f"construction; got batch_size={batch_size}."
            )
        config = self.model.config
        self.model.locator.std = config.location_std_at(progress)
        if config.location_learner == "ppo":
            batch, terms = self._ppo_terms(config)
        elif self.game:
            batch = self.forward_model(self.train_episodes)
            terms = game_loss(batch, config.reinforce_weight, self.rollouts_per_image,
                              config.gae_lambda, config.entropy_weight)  # fmt: skip
        else:
            batch = self.forward_model(self.train_episodes)
            terms = hybrid_loss(
                batch,
                config.reinforce_weight,
                config.reward,
                self.rollouts_per_image,
                config.early_answer_weight,
                config.gae_lambda,
            )
        terms["accuracy"] = batch.rewards.mean()
        if config.location_std_start is not None:  # logged as train_location_std
            terms["location_std"] = torch.tensor(self.model.locator.std)
        return terms

    def _ppo_terms(self, config: RAMConfig) -> tuple[Rollout, dict[str, torch.Tensor]]:
        """``--location-learner ppo``: a new batch of episodes every ``ppo_epochs`` calls,
        trained on by :func:`ppo_loss` at each (the first as played, then replayed)."""
        collected = self._collected
        if collected is None or collected.uses >= config.ppo_epochs:
            record = EpisodeRecord()
            batch = self.forward_model(self.train_episodes, record)
            collected = collect(batch, record, config.reward, self.rollouts_per_image,
                                config.gae_lambda, self.model.locator.std)  # fmt: skip
            self._collected = collected
        else:
            self.model.locator.std = collected.std  # the ratio is of the policy then
            batch = self.model.replay(collected.record, collected.labels, collected.rewards)
        collected.uses += 1
        terms = ppo_loss(batch, collected, config.ppo_clip, config.reinforce_weight,
                         config.early_answer_weight)  # fmt: skip
        return batch, terms

    def policy(self, sample: bool = False) -> RAMPolicy:
        """The model as an evaluation policy: mean locations, or sampled ones."""
        return RAMPolicy(self.model, self.horizon, self.device, sample)

    def predictor(self) -> RAMPredictor:
        """The model with its sensor, running whole episodes without the environment."""
        if self.game:
            raise ConfigError(
                "A game's screen changes with every move, so its agent plays through the "
                "environment; the predictor answers still images. Use glimpse eval, or "
                "evaluate(learner.policy(), episodes)."
            )
        config = self.train_episodes.config
        return RAMPredictor(self.model, self.train_episodes.sensor, config.glimpses,
                            config.first_location)  # fmt: skip

    def evaluate(self, split: str, samples: int = 1) -> tuple[Evaluation, np.ndarray]:
        """Results on a whole fixed split, and class probabilities ``(N, n_classes)``.

        ``samples=1`` follows the mean locations (deterministic, as in the paper), through
        :meth:`predictor`, from the first locations the environment's evaluation draws;
        ``samples=M > 1`` averages the class probabilities of M runs with sampled locations,
        through the environment.
        """
        episodes = self._episodes(split)
        self.model.eval()
        if self.game:
            if samples != 1:
                raise ConfigError(
                    f"samples={samples}: a game is scored by its catches, not by class "
                    "probabilities to average; leave --samples out."
                )
            result = evaluate(self.policy(), episodes)
            return result, np.exp(result.scores)
        if samples == 1:
            result = self._predict(episodes)
            return result, np.exp(result.scores)
        sample = samples > 1
        probabilities = None
        for m in range(samples):
            result = evaluate(self.policy(sample), episodes, m)
            p = np.exp(result.scores)
            probabilities = p if probabilities is None else probabilities + p
        assert probabilities is not None
        probabilities /= samples
        return result, probabilities

    def evaluate_locations(self, split: str, locations: str) -> Evaluation:
        """The model on a whole fixed split, looking where it is told rather than where it
        learned to (the answer still its own): ``"random"``, every glimpse uniform over the
        canvas (seed 0; compare the paper's "random glimpses" row, a model trained so), or
        ``"fixed"``, at step ``t`` the mean of its own learned locations at step ``t`` over the
        validation split (the best sequence that ignores the image, chosen without the test
        set)."""
        if self.game:
            raise ConfigError(
                "--locations tells a model where to look on still images; a game's agent "
                "looks where its own gaze follows the ball. Leave --locations out."
            )
        if locations not in TOLD_LOCATIONS:
            raise ConfigError(
                f"locations={locations!r}; choose {' or '.join(TOLD_LOCATIONS)} (the learned "
                "locations are evaluate()'s)."
            )
        episodes = self._episodes(split)
        shape = (episodes.task.split_size(split), self.horizon, 2)
        if locations == "random":
            told = np.random.default_rng(0).uniform(-1.0, 1.0, shape).astype(np.float32)
        else:
            learned = self._predict(self._episodes("val")).locations
            told = np.repeat(learned.mean(axis=0)[None], shape[0], axis=0)
        return self._predict(episodes, told)

    def _episodes(self, split: str) -> GlimpseEpisodes:
        if split not in self._eval:
            self._eval[split] = evaluation_episodes(self.env_settings, split, self.eval_episodes)
        return self._eval[split]

    def _predict(self, episodes: GlimpseEpisodes, told: np.ndarray | None = None) -> Evaluation:
        """:func:`evaluate` of the mean-location policy, computed by :meth:`predictor` in
        batches of the episodes' size (the same numbers: the same products on the same rows);
        with ``told`` ``(N, T, 2)``, the model looking there instead."""
        self.model.eval()
        fixed = self.task.fixed_canvases(episodes.split)
        firsts = first_locations(episodes)
        predictor, batch = self.predictor(), episodes.num_envs
        scores, locations = [], []
        for start in range(0, len(fixed.labels), batch):
            chunk = slice(start, start + batch)
            log_probs, visited = predictor.episode(
                fixed.images[chunk], firsts[chunk], locations=None if told is None else told[chunk]
            )
            scores.append(log_probs.cpu().numpy())
            locations.append(visited.cpu().numpy())
        score = np.concatenate(scores)
        return Evaluation(
            labels=fixed.labels.copy(),
            predictions=score.argmax(axis=1),
            successes=score.argmax(axis=1) == fixed.labels,
            glimpses_taken=np.full(len(score), self.horizon),
            locations=np.concatenate(locations),
            scores=score,
            target_boxes=np.repeat(
                self.task.fixed_target_boxes(episodes.split)[:, None], self.horizon, axis=1
            ),
        )

    def looking(self, split: str) -> TargetShare:
        """How often the finest patch of a glimpse (mean locations) overlapped the target."""
        return self.error_and_looking(split)[1]

    def error(self, split: str, samples: int = 1) -> float:
        """Error in percent on ``split``: wrong classes, or in a game the balls missed."""
        return self._error(*self.evaluate(split, samples))

    def error_and_looking(self, split: str, samples: int = 1) -> tuple[float, TargetShare]:
        """:meth:`error` and :meth:`looking`; with ``samples=1`` from one pass."""
        result, probabilities = self.evaluate(split, samples)
        mean_locations = result if samples == 1 else self.evaluate(split)[0]
        sensor, (height, width) = self.train_episodes.sensor, self.task.canvas_shape[1:]
        return self._error(result, probabilities), mean_locations.target_share(sensor, height,
                                                                                width)  # fmt: skip

    def _error(self, result: Evaluation, probabilities: np.ndarray) -> float:
        if self.game:
            return result.error_percent
        return 100.0 * float(np.mean(probabilities.argmax(axis=1) != result.labels))

    def draw(self, out: Path, n: int, split: str, title: str = "") -> Trajectories:
        """The glimpse trajectories (mean locations) on the first ``n`` canvases of ``split``."""
        from glimpse.agents.visualise import draw_policy

        return draw_policy(self.policy(), self.env_settings, out, n, split, title)

    def validation_error(self) -> float:
        return self.error("val")

    def test_error(self) -> float:
        return self.error("test")

    def data_state(self) -> dict[str, Any]:
        """Every slot's key and episode count, as lists of ints: a checkpoint of plain data
        loads without unpickling numpy's classes; with ``--location-learner ppo`` also the
        batch of episodes being trained on (tensors), so a resumed run replays it, while it has
        replays to come (a spent batch would only be replaced: at 60 x 60 its glimpses are
        1.8 MB, over half the rest of the checkpoint)."""
        state: dict[str, Any] = {
            "keys": self.train_episodes.keys.tolist(),
            "episode_numbers": self.train_episodes.episode_numbers.tolist(),
        }
        collected = self._collected
        if collected is not None and collected.uses < self.model.config.ppo_epochs:
            state["collected"] = collected.state()
        return state

    def load_data_state(self, state: dict[str, Any]) -> None:
        """Restores :meth:`data_state` (or the numpy arrays that older checkpoints hold)."""
        # Every process has run as many episodes per slot; only the keys differ by rank.
        keys = state["keys"] if distributed.rank() == 0 else self._stream_keys()
        self.train_episodes.seed(np.asarray(keys, np.uint64))
        self.train_episodes.episode_numbers[:] = np.asarray(state["episode_numbers"], np.uint64)
        collected = state.get("collected")
        self._collected = None if collected is None else Collected.from_state(collected)


def _check_game_config(config: RAMConfig) -> None:
    """A game has no class to read early and its reward is the catch: refuse settings that
    would otherwise be ignored."""
    if config.location_learner != "reinforce":
        raise ConfigError(
            "In a game RAM learns its moves and locations by REINFORCE: leave "
            "--location-learner at reinforce."
        )
    if config.reward != "correct" or config.early_answer_weight > 0:
        raise ConfigError(
            "In a game RAM's reward is the catch and there is no class to name: leave --reward "
            "and --early-answer-weight at their defaults."
        )
