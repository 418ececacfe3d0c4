"""Accuracy on a whole fixed split: every canvas exactly once, in order.

The evaluator drives :class:`glimpse.envs.episodes.GlimpseEpisodes` in rounds of ``num_envs``
episodes
that start together (slot ``i`` of round ``r`` shows canvas ``r * num_envs + i``), so any agent
that implements :class:`Policy` (RAM, an SB3 model, a scripted baseline) is scored on the same
images, and the last, partial round counts only the canvases not yet seen.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from glimpse.envs.episodes import GlimpseEpisodes, episode_uniforms
from glimpse.envs.glimpse_env import make_episodes
from glimpse.sensor import GlimpseSensor


class Policy(Protocol):
    """An agent as the evaluator sees it."""

    def start(self, num_envs: int) -> None:
        """Called when ``num_envs`` new episodes begin together (clear any memory)."""

    def act(self, observations: dict[str, np.ndarray]) -> np.ndarray:
        """Actions ``(num_envs, action width)`` for the current observations."""


@dataclass(frozen=True)
class Evaluation:
    """Per-canvas results on a split, in canvas order."""

    labels: np.ndarray  # (N,) -1 in a game, which has no class to name
    predictions: np.ndarray  # (N,) -1 in a game
    successes: np.ndarray  # (N,) bool: the right class, or the ball caught
    glimpses_taken: np.ndarray
    locations: np.ndarray  # (N, T, 2), NaN after the last glimpse
    scores: np.ndarray  # (N, n_classes) class scores of the final action (continuous actions)
    target_boxes: np.ndarray  # (N, T, 4) the target's box at each glimpse (glimpse.tasks)

    def target_share(self, sensor: GlimpseSensor, height: int, width: int) -> TargetShare:
        """How often the finest patch of a glimpse overlapped the target."""
        hits = finest_patch_on_target(self.locations, self.target_boxes, sensor, height, width)
        return TargetShare.of(hits)

    @property
    def accuracy(self) -> float:
        """The share of successes: right answers, or catches in a game."""
        return float(np.mean(self.successes))

    @property
    def error_percent(self) -> float:
        return 100.0 * (1.0 - self.accuracy)


def finest_patch_on_target(
    locations: np.ndarray, boxes: np.ndarray, sensor: GlimpseSensor, height: int, width: int
) -> np.ndarray:
    """``(N, T)``: 1 where glimpse ``t``'s finest patch overlaps its canvas's target box, 0
    where it does not, NaN where no glimpse was taken (``locations`` ``(N, T, 2)`` NaN there;
    ``boxes`` ``(N, 4)``, or ``(N, T, 4)`` where the target moves: top, left, bottom, right,
    as :mod:`glimpse.tasks` defines them)."""
    n, steps, _ = locations.shape
    flat = locations.reshape(-1, 2)
    taken = ~np.isnan(flat[:, 0])
    origins = sensor.patch_origins(torch.from_numpy(np.nan_to_num(flat)), height, width)
    x0, y0 = origins[:, 0, 0].numpy(), origins[:, 0, 1].numpy()  # the finest patch: scale 0
    side = sensor.patch_sizes[0]
    top, left, bottom, right = np.broadcast_to(
        boxes.reshape(n, -1, 4), (n, steps, 4)).reshape(-1, 4).T  # fmt: skip
    overlap = (x0 < right) & (x0 + side > left) & (y0 < bottom) & (y0 + side > top)
    return np.where(taken, overlap, np.nan).reshape(n, steps)


@dataclass(frozen=True)
class TargetShare:
    """How much of a model's looking fell on the target, over a split (in percent).

    Built from ``(N, T)`` shares per canvas and step: for hard attention 1 or 0 (the finest
    patch overlaps the target box or not, :func:`finest_patch_on_target`), for soft attention
    the attention weight on the cells that overlap the box; NaN where no glimpse was taken.
    """

    per_step: list[float]  # step t: mean over the canvases that took a glimpse t
    last: float  # each canvas's last glimpse (or attention step)
    overall: float  # every glimpse taken

    @classmethod
    def of(cls, shares: np.ndarray) -> TargetShare:
        taken = ~np.isnan(shares)
        last_step = taken.shape[1] - 1 - np.argmax(taken[:, ::-1], axis=1)
        last = shares[np.arange(len(shares)), last_step]
        per_step = [100.0 * float(np.nanmean(column)) for column in shares.T if
                    np.any(~np.isnan(column))]  # fmt: skip
        return cls(per_step, 100.0 * float(np.nanmean(last)), 100.0 * float(np.nanmean(shares)))

    def describe(self, what: str) -> str:
        """One line: ``what`` (for example "finest patch on the digit") overall, at the last
        step and step by step."""
        steps = " ".join(f"{share:.0f}" for share in self.per_step)
        return (
            f"{what}: {self.overall:.1f}% overall, {self.last:.1f}% at the last step "
            f"(by step, %: {steps})"
        )


def standard_error_percent(error_percent: float, images: int) -> float:
    """The binomial standard error of an error rate measured on ``images`` images, in points:
    ``100 sqrt(p (1 - p) / n)``. Two runs' errors closer than about twice this are not told
    apart by the split (for 1.9% on 10,000 images: 0.14 points)."""
    p = error_percent / 100.0
    return 100.0 * math.sqrt(p * (1.0 - p) / images)


def evaluate(policy: Policy, episodes: GlimpseEpisodes, seed: int = 0) -> Evaluation:
    """Runs ``policy`` once on every canvas of the episodes' (sequential) split."""
    if not episodes.sequential:
        raise ValueError("evaluate() needs episodes on a val or test split with sequential=True.")
    total, batch = episodes.task.split_size(episodes.split), episodes.num_envs
    episodes.seed(_slot_keys(seed, batch))
    keys = ("label", "prediction", "is_success", "glimpses_taken", "locations", "target_boxes",
            "scores")  # fmt: skip
    results: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    everyone = np.ones(batch, bool)
    continuous = episodes.config.action_type == "continuous"
    n_classes = episodes.task.num_classes
    for round_index in range(math.ceil(total / batch)):
        counted = min(batch, total - round_index * batch)
        episodes.reset(everyone)
        policy.start(batch)
        active = everyone.copy()
        ended = {"scores": np.zeros((batch, n_classes), np.float32),
                 "label": np.full(batch, -1), "prediction": np.full(batch, -1)}  # fmt: skip
        steps = episodes.config.glimpses
        while active.any():
            actions = policy.act(episodes.observations())
            _, terminated, infos = episodes.step(actions, active)
            for key in (*keys[:-1], "target_box"):
                if key in infos:
                    mask = infos[f"_{key}"]
                    ended.setdefault(key, np.zeros_like(infos[key]))[mask] = infos[key][mask]
            if continuous:
                ended["scores"][terminated] = actions[terminated, 2 : 2 + n_classes]
            active &= ~terminated
        # a still target's one box stands for every glimpse; a game gives the ball's at each
        ended.setdefault("target_boxes", np.repeat(ended["target_box"][:, None], steps, axis=1))
        for key, values in results.items():
            values.append(ended[key][:counted])
    return Evaluation(
        labels=np.concatenate(results["label"]),
        predictions=np.concatenate(results["prediction"]),
        successes=np.concatenate(results["is_success"]),
        glimpses_taken=np.concatenate(results["glimpses_taken"]),
        locations=np.concatenate(results["locations"]),
        scores=np.concatenate(results["scores"]),
        target_boxes=np.concatenate(results["target_boxes"]),
    )


def _slot_keys(seed: int, num_envs: int) -> np.ndarray:
    """The slots' random keys of an evaluation from ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**63, num_envs, dtype=np.int64).astype(np.uint64)


def first_locations(episodes: GlimpseEpisodes, seed: int = 0) -> np.ndarray:
    """Where :func:`evaluate` ``(policy, episodes, seed)`` takes the first glimpse on each
    canvas of the split, ``(N, 2)`` in canvas order: an agent that runs its episodes without
    the environment (:class:`glimpse.agents.ram.RAMPredictor`) starts from the same places."""
    total, batch = episodes.task.split_size(episodes.split), episodes.num_envs
    keys = _slot_keys(seed, batch)
    rounds = [
        episodes.first_locations(episode_uniforms(
            keys, np.full(batch, r, np.uint64), episodes.uniforms_per_episode()
        ))
        for r in range(math.ceil(total / batch))
    ]  # fmt: skip
    return np.concatenate(rounds)[:total]


def evaluation_episodes(
    settings: dict[str, Any], split: str = "test", num_envs: int = 500
) -> GlimpseEpisodes:
    """Batched episodes that walk ``split`` in order, for :func:`evaluate`."""
    return make_episodes(num_envs, split, True, settings)


@dataclass(frozen=True)
class Trajectories:
    """What an agent did on ``n`` canvases, step by step (saved as ``.npz``, drawn by viz)."""

    canvases: np.ndarray  # (n, C, H, W) uint8; a game's screens: (n, T, C, H, W), one a glimpse
    labels: np.ndarray  # (n,) -1 in a game
    predictions: np.ndarray  # (n,) -1 in a game
    scores: np.ndarray  # (n, n_classes) final class scores (zeros for discrete actions)
    locations: np.ndarray  # (n, T, 2) where each glimpse was taken, NaN after the last
    glimpses: np.ndarray  # (n, T, k, C, g, g)
    sensor: np.ndarray  # (3,) glimpse_size, num_scales, scale_factor
    class_names: np.ndarray  # (n_classes,) str
    successes: np.ndarray  # (n,) bool: the right class, or the ball caught

    def frame(self, episode: int, step: int) -> np.ndarray:
        """The canvas ``(C, H, W)`` episode ``episode`` showed at glimpse ``step``."""
        moving = self.canvases.ndim == 5
        return self.canvases[episode, step] if moving else self.canvases[episode]

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, **dataclasses.asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> Trajectories:
        """Trajectories saved by :meth:`save` (files from before ``successes`` existed get
        it from their labels and predictions)."""
        with np.load(path, allow_pickle=False) as data:
            fields = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
        fields.setdefault("successes", fields["labels"] == fields["predictions"])
        return cls(**fields)


def record_trajectories(policy: Policy, episodes: GlimpseEpisodes, seed: int = 0) -> Trajectories:
    """Runs ``policy`` once on the first ``num_envs`` canvases of the split, recording each step."""
    n, horizon = episodes.num_envs, episodes.config.glimpses
    n_classes = episodes.task.num_classes
    keys = np.random.default_rng(seed).integers(0, 2**63, n, dtype=np.int64)
    episodes.seed(keys.astype(np.uint64))
    episodes.reset(np.ones(n, bool))
    policy.start(n)
    glimpses = np.zeros((n, horizon, *episodes.glimpse_shape), np.float32)
    labels, predictions = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    successes = np.zeros(n, bool)
    locations = np.full((n, horizon, 2), np.nan, np.float32)
    scores = np.zeros((n, n_classes), np.float32)
    screens = []  # a game's screen at each glimpse
    active = np.ones(n, bool)
    for t in range(horizon):
        observations = episodes.observations()
        glimpses[active, t] = observations["glimpse"][active]
        if episodes.dynamic:
            screens.append(episodes.canvases.copy())
        actions = policy.act(observations)
        _, terminated, infos = episodes.step(actions, active)
        if terminated.any() and "label" in infos:  # a game names no class
            labels[terminated] = infos["label"][terminated]
            predictions[terminated] = infos["prediction"][terminated]
        if terminated.any():
            successes[terminated] = infos["is_success"][terminated]
            locations[terminated] = infos["locations"][terminated]
            if episodes.config.action_type == "continuous":
                scores[terminated] = actions[terminated, 2 : 2 + n_classes]
        active &= ~terminated
    config = episodes.config
    return Trajectories(
        canvases=np.stack(screens, axis=1) if screens else episodes.canvases.copy(),
        labels=labels,
        predictions=predictions,
        scores=scores,
        locations=locations,
        glimpses=glimpses,
        sensor=np.array([config.glimpse_size, config.num_scales, config.scale_factor]),
        class_names=np.array(episodes.task.class_names),
        successes=successes,
    )
