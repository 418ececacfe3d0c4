"""The glimpse episode, batched: the one implementation every environment and trainer drives.

An episode is one canvas (or one game whose screen changes at every step, :mod:`glimpse.catch`:
the class of every action is then a move, and the reward is the game's). After ``reset`` the
agent holds its first glimpse (at a random
location, or the centre). Each ``step`` takes an action holding the next location and a class:
on steps ``1 .. T-1`` the agent moves and receives the next glimpse; on step ``T`` (or earlier,
when the optional stop action is enabled and taken) the class is its answer and the episode
ends. Reward: 1 for a correct answer, else 0, at the end; optional, off by default, a per-step
classification reward and a per-glimpse cost on the other steps.

Randomness is a counter-based stream per slot (splitmix64 over ``(slot key, episode number,
draw number)``), vectorised over slots: slot ``i`` of a batch draws exactly what a single
environment with the same key draws, whatever the batch size, and no Python loop runs over
slots. :class:`~glimpse.envs.glimpse_env.GlimpseEnv` and
:class:`~glimpse.envs.glimpse_env.GlimpseVectorEnv`
take the keys from Gymnasium's seeded ``np_random``, so ``reset(seed=s)`` of a vector env of N
equals ``reset(seed=s + i)`` of N single environments.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from glimpse.catch import Catch
from glimpse.config import check_at_least, check_fields, check_positive, option
from glimpse.errors import ConfigError
from glimpse.sensor import GlimpseSensor, IntegralImages
from glimpse.tasks import SPLITS, Task

ACTION_TYPES = ("discrete", "continuous")
CLASS_REWARDS = ("correct", "log-likelihood")
FIRST_LOCATIONS = ("random", "centre")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class EpisodeConfig:
    """What the agent sees (the sensor), for how long, and how it acts and is rewarded."""

    glimpses: int = option(6, "Glimpses per episode (T); the answer is given at step T.")
    glimpse_size: int = option(8, "Side g of every glimpse patch after averaging.")
    num_scales: int = option(1, "Number k of concentric patches per glimpse.")
    scale_factor: int = option(2, "Patch i has side g * s**i pixels.")
    first_location: str = option(
        "random", "Where the first glimpse is taken.", choices=FIRST_LOCATIONS
    )
    action_type: str = option(
        "discrete",
        "discrete: MultiDiscrete([G, G, classes]) (PPO's default); continuous: Box of location "
        "and class scores (RAM; PPO with class_reward='log-likelihood').",
        choices=ACTION_TYPES,
    )
    grid_size: int = option(8, "discrete actions: locations form a G x G grid of cell centres.")
    class_reward: str = option(
        "correct",
        "What a class earns: correct (1 if right, else 0; the paper) or log-likelihood "
        "(log softmax(scores)[label], the log-probability the class scores give the true "
        "label; continuous actions only).",
        choices=CLASS_REWARDS,
    )
    score_bound: float = option(
        1.0,
        "continuous actions: the class scores' bounds [-b, b] in the action space (a policy "
        "that clips to them, like PPO's, needs b of about 5 to reach confident answers).",
    )
    step_reward: float = option(
        0.0, "Weight of the class reward on the steps before the last (0: off, as in the paper)."
    )
    allow_stop: bool = option(False, "Add a stop-and-answer action (ends the episode early).")
    glimpse_cost: float = option(0.0, "Reward subtracted for every glimpse after the first.")
    history: bool = option(
        False, "Add every glimpse and location so far to the observation (memory for PPO)."
    )
    screen: bool = option(
        False, "Add the whole canvas (uint8, C x H x W) to the observation: what a full-view "
        "policy reads (recurrent-ppo then reads it instead of the glimpses), the comparison "
        "for glimpse agents in a game."
    )  # fmt: skip

    def __post_init__(self) -> None:
        check_fields(self)
        check_at_least(self, 1, "glimpses", "grid_size")
        check_positive(self, "score_bound")
        if self.class_reward == "log-likelihood" and self.action_type != "continuous":
            raise ConfigError(
                "class_reward='log-likelihood' needs class scores: set action_type='continuous' "
                "(or keep class_reward='correct' with discrete actions)."
            )


def _mix(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a bijection of uint64 that scrambles every bit."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def episode_uniforms(keys: np.ndarray, episodes: np.ndarray, count: int) -> np.ndarray:
    """``(n, count)`` uniforms in ``[0, 1)`` for episode ``episodes[i]`` of the slot ``keys[i]``."""
    with np.errstate(over="ignore"):
        episode_keys = _mix(keys.astype(np.uint64) + episodes.astype(np.uint64) * _GOLDEN)
        draws = np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN
        bits = _mix(episode_keys[:, None] ^ draws[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def action_array(actions: Any, space: spaces.Space[Any], num_envs: int | None = None) -> np.ndarray:
    """``actions`` as a numeric array: one action of ``space`` (``num_envs`` None) or one action
    for each of ``num_envs`` environments, ``(num_envs, width)``.

    Raises ``ValueError`` that describes the actions as the caller passed them (a non-numeric
    type, a wrong shape, NaN). Infinite values pass: they are clipped like any out-of-range
    value. Whole-array checks only, so a batch costs no Python loop over its slots.
    """
    what, expected = ("action", space.shape) if num_envs is None else (
        "actions", (num_envs, *space.shape))  # fmt: skip

    def wanted() -> str:  # formatted only for an error: a space's repr costs 30 us a step
        if num_envs is None:
            return f"{expected} for {space}"
        return f"{expected}: one action of {space} for each of the {num_envs} environments"

    try:
        array = np.asarray(actions)
    except (ValueError, TypeError):  # ragged nesting: not numbers either, reported below
        array = np.empty(0, object)
    if array.dtype.kind not in "biuf":
        given = (
            f"a numpy array of dtype {actions.dtype}"
            if isinstance(actions, np.ndarray)
            else f"{type(actions).__name__} {reprlib.repr(actions)}"
        )
        raise ValueError(
            f"{what} must be a numpy array or a sequence of numbers, got {given}; expected "
            f"shape {wanted()}."
        )
    if array.shape != expected:
        verb = "has" if num_envs is None else "have"
        raise ValueError(f"{what} {verb} shape {array.shape}, expected {wanted()}.")
    if array.dtype.kind == "f" and np.isnan(array).any():
        if num_envs is None:
            raise ValueError(f"action contains NaN: {array.tolist()}. Check the policy's output.")
        bad = np.flatnonzero(np.isnan(array).any(axis=1))  # only once NaN is known to be there
        raise ValueError(
            f"actions contain NaN in {len(bad)} of {num_envs} environments (the first, "
            f"environment {bad[0]}: {array[bad[0]].tolist()}). Check the policy's output."
        )
    return array


def _check_game_settings(game: Catch, config: EpisodeConfig) -> None:
    """A game's episode lasts as long as the game, and its reward is the game's."""
    if config.glimpses != game.steps:
        raise ConfigError(
            f"A Catch game on a {game.canvas_size} px screen lasts {game.steps} steps: pass "
            f"glimpses={game.steps} (got {config.glimpses})."
        )
    if config.allow_stop or config.class_reward != "correct" or config.step_reward:
        raise ConfigError(
            "Catch rewards a catch at the end of the game: leave allow_stop, class_reward and "
            "step_reward at their defaults."
        )


class GlimpseEpisodes:
    """``num_envs`` glimpse episodes on one task, stepped together; see the module docstring.

    The per-slot state: the canvas and its label, the sensor's integral table, the current
    location, how many glimpses were taken, and the locations visited so far.

    The sensor runs under ``torch.inference_mode``: the episodes hand out numpy arrays, so no
    tensor they compute needs autograd, and each operation dispatches faster without its
    bookkeeping.
    """

    def __init__(
        self,
        task: Task | Catch,
        config: EpisodeConfig,
        num_envs: int,
        split: str = "train",
        sequential: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
        if num_envs < 1:
            raise ConfigError(f"num_envs={num_envs} must be at least 1.")
        if task.split_size(split) == 0:
            raise ConfigError(f"The {split} split of this task is empty; choose another split.")
        self.task, self.config, self.num_envs, self.split = task, config, num_envs, split
        self.dynamic = isinstance(task, Catch)  # the scene advances with every step
        if self.dynamic:
            _check_game_settings(task, config)
        self.sequential = sequential and split != "train"
        self.sensor = GlimpseSensor(config.glimpse_size, config.num_scales, config.scale_factor)
        horizon = config.glimpses
        observation_spaces = {
            "glimpse": spaces.Box(0.0, 1.0, self.glimpse_shape, np.float32),
            "location": spaces.Box(-1.0, 1.0, (2,), np.float32),
            "step": spaces.Box(0.0, 1.0, (1,), np.float32),
        }
        if config.history:
            observation_spaces["history_glimpses"] = spaces.Box(
                0.0, 1.0, (horizon, *self.glimpse_shape), np.float32
            )
            observation_spaces["history_locations"] = spaces.Box(
                -1.0, 1.0, (horizon, 2), np.float32
            )
        if config.screen:
            observation_spaces["screen"] = spaces.Box(0, 255, task.canvas_shape, np.uint8)
        self.observation_space = spaces.Dict(observation_spaces)
        self.action_space = self._make_action_space()
        n = num_envs
        self.keys = np.zeros(n, np.uint64)
        self.episode_numbers = np.zeros(n, np.uint64)
        self.cursor = 0
        self.canvases = np.zeros((n, *task.canvas_shape), np.uint8)
        self.labels = np.zeros(n, np.int64)
        self.target_boxes = np.zeros((n, 4), np.int64)  # see glimpse.tasks: the target's ink
        self.boxes_seen = np.zeros((n, config.glimpses, 4), np.int64)  # the box at each glimpse
        self.table = self.sensor.integral(torch.from_numpy(self.canvases))
        self.locations = np.zeros((n, 2), np.float32)
        self.taken = np.zeros(n, np.int64)  # glimpses taken in the episode so far
        self.visited = np.full((n, horizon, 2), np.nan, np.float32)
        self.glimpses = np.zeros((n, *self.glimpse_shape), np.float32)
        self.seen = (
            np.zeros((n, horizon, *self.glimpse_shape), np.float32) if config.history else None
        )
        self.scene = np.zeros((n, task.state_width)) if self.dynamic else None  # game states

    # -- spaces ---------------------------------------------------------------------------

    @property
    def glimpse_shape(self) -> tuple[int, int, int, int]:
        g = self.config.glimpse_size
        return (self.config.num_scales, self.task.channels, g, g)

    @property
    def action_width(self) -> int:
        width = 3 if self.config.action_type == "discrete" else 2 + self.task.num_classes
        return width + int(self.config.allow_stop)

    def _make_action_space(self) -> spaces.Space[Any]:
        stop = [2] if self.config.allow_stop else []
        if self.config.action_type == "discrete":
            grid = self.config.grid_size
            return spaces.MultiDiscrete([grid, grid, self.task.num_classes, *stop])
        bound = np.ones(self.action_width, np.float32)
        bound[2 : 2 + self.task.num_classes] = self.config.score_bound
        return spaces.Box(-bound, bound, dtype=np.float32)

    def grid_locations(self, cells: np.ndarray) -> np.ndarray:
        """Discrete grid cells ``0 .. G-1`` to locations: the cell centres ``-1 + (2i + 1) / G``."""
        return (-1.0 + (2.0 * cells + 1.0) / self.config.grid_size).astype(np.float32)

    # -- episodes -------------------------------------------------------------------------

    def seed(self, keys: np.ndarray) -> None:
        """Restarts every slot's random stream from ``keys`` and the evaluation order at 0."""
        self.keys = np.asarray(keys, np.uint64).copy()
        self.episode_numbers[:] = 0
        self.cursor = 0

    @torch.inference_mode()
    def reset(self, slots: np.ndarray) -> None:
        """Starts new episodes in the slots where the boolean mask ``slots`` is set."""
        index = np.flatnonzero(slots)
        if len(index) == 0:
            return
        n_images = self.task.split_size(self.split)
        uniforms = episode_uniforms(
            self.keys[index], self.episode_numbers[index], self.uniforms_per_episode()
        )
        self.episode_numbers[index] += np.uint64(1)
        if self.sequential:
            images = (self.cursor + np.arange(len(index))) % n_images
            self.cursor = int((self.cursor + len(index)) % n_images)
        else:
            images = np.floor(uniforms[:, 0] * n_images).astype(np.int64)
        if self.scene is not None:  # a game: its first screen
            starts = self.task.fixed_starts(self.split)[images] if self.sequential else (
                uniforms[:, 3:])  # fmt: skip
            self.scene[index] = self.task.start(starts)
            canvases, labels = self.task.draw(self.scene[index]), np.zeros(len(index), np.int64)
            boxes = self.task.ball_boxes(self.scene[index])
        elif self.sequential:
            fixed = self.task.fixed_canvases(self.split)
            canvases, labels = fixed.images[images], fixed.labels[images]
            boxes = self.task.fixed_target_boxes(self.split)[images]
        else:
            layout = uniforms[:, 3:]
            canvases, labels = self.task.canvases_from_uniforms(self.split, images, layout)
            boxes = self.task.target_boxes_from_uniforms(self.split, images, layout)
        self.labels[index] = labels
        self._show(index, canvases, boxes)
        first = self.first_locations(uniforms)
        self.locations[index] = first
        self.taken[index] = 1
        self.visited[index] = np.nan
        self.visited[index, 0] = first
        self.boxes_seen[index, 0] = self.target_boxes[index]
        if self.seen is not None:
            self.seen[index] = 0.0
        self._read_glimpses(slots)

    def _show(self, index: np.ndarray, canvases: np.ndarray, boxes: np.ndarray) -> None:
        """Puts new canvases (and their target boxes) in the slots ``index``, with their
        sensor tables."""
        self.canvases[index], self.target_boxes[index] = canvases, boxes
        table = self.sensor.integral(torch.from_numpy(canvases))
        if len(index) == self.num_envs:
            self.table = table
        else:
            self.table.table[torch.from_numpy(index)] = table.table
            self.table = IntegralImages(self.table.table, table.value_scale)  # no stale copies

    def first_locations(self, uniforms: np.ndarray) -> np.ndarray:
        """The first glimpse's location ``(n, 2)`` of episodes from their uniforms ``(n, m)``
        (:func:`episode_uniforms`; columns 1 and 2): uniform over the canvas, or its centre."""
        if self.config.first_location == "random":
            return (uniforms[:, 1:3] * 2.0 - 1.0).astype(np.float32)
        return np.zeros((len(uniforms), 2), np.float32)

    def uniforms_per_episode(self) -> int:
        """How many uniforms an episode draws at reset: which canvas, the first location (2),
        then the task's draws for a fresh canvas."""
        return 3 + self.task.draws_per_canvas

    @torch.inference_mode()
    def _read_glimpses(self, slots: np.ndarray) -> None:
        """Reads every slot's current glimpse; ``slots`` (a mask) just took a new one."""
        self.glimpses = self.sensor.read(self.table, torch.from_numpy(self.locations)).numpy()
        if self.seen is not None:
            index = np.flatnonzero(slots)
            self.seen[index, self.taken[index] - 1] = self.glimpses[index]

    def observations(self) -> dict[str, np.ndarray]:
        """The current observation of every slot (fresh arrays, safe to keep)."""
        observations = {
            "glimpse": self.glimpses.copy(),
            "location": self.locations.copy(),
            "step": ((self.taken - 1) / self.config.glimpses).astype(np.float32)[:, None],
        }
        if self.seen is not None:
            observations["history_glimpses"] = self.seen.copy()
            observations["history_locations"] = np.nan_to_num(self.visited)
        if self.config.screen:
            observations["screen"] = self.canvases.copy()
        return observations

    def decode_actions(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Next locations ``(N, 2)``, classes ``(N,)`` and stop flags ``(N,)`` from actions
        ``(N, width)``, checked by :func:`action_array`.

        Out-of-range values, infinite ones included, are clipped (grid cells, classes, locations
        to ``[-1, 1]``; class scores to ``[-score_bound, score_bound]`` in the log-likelihood
        reward); the class of continuous actions is the highest score, so ``+inf`` wins.
        """
        array = action_array(actions, self.action_space, self.num_envs)
        n_classes = self.task.num_classes
        if self.config.action_type == "discrete":
            cells = np.clip(np.rint(array[:, :2]), 0, self.config.grid_size - 1)
            locations = self.grid_locations(cells)
            classes = np.clip(np.rint(array[:, 2]), 0, n_classes - 1).astype(np.int64)
            stop = np.rint(array[:, 3]) >= 1 if self.config.allow_stop else None
        else:
            locations = np.clip(array[:, :2], -1.0, 1.0).astype(np.float32)
            classes = np.argmax(array[:, 2 : 2 + n_classes], axis=1)
            stop = array[:, -1] > 0 if self.config.allow_stop else None
        if stop is None:
            stop = np.zeros(self.num_envs, bool)
        return locations, classes, stop

    @torch.inference_mode()
    def _advance_game(self, index: np.ndarray, moves: np.ndarray) -> None:
        """One step of the game in the slots ``index``: the paddles move by ``moves``, the
        balls fly, and the new screens (and the balls' boxes) replace the old ones."""
        if len(index) == 0:
            return
        assert self.scene is not None
        self.scene[index] = self.task.advance(self.scene[index], moves[index])
        state = self.scene[index]
        self._show(index, self.task.draw(state), self.task.ball_boxes(state))

    def _log_likelihoods(self, actions: Any) -> np.ndarray:
        """``log softmax(scores)[label]`` of every slot, from continuous actions ``(N, width)``,
        the scores clipped to ``[-score_bound, score_bound]`` like every out-of-range action."""
        scores = np.asarray(actions, np.float64)[:, 2 : 2 + self.task.num_classes]
        scores = np.clip(scores, -self.config.score_bound, self.config.score_bound)
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return np.take_along_axis(log_probs, self.labels[:, None], axis=1)[:, 0]

    def step(
        self, actions: Any, active: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Advances the ``active`` slots (all by default) by one action each.

        Returns rewards ``(N,)`` float32, terminated ``(N,)`` bool (inactive slots: 0 and
        False) and, for the slots that just ended, ``label``, ``prediction``, ``is_success``,
        ``glimpses_taken``, ``locations`` (``(N, T, 2)``, NaN after the last glimpse) and
        ``target_box`` (``(N, 4)``: top, left, bottom, right of the target's ink in canvas
        pixels, bottom and right exclusive), each with its Gymnasium ``_key`` mask.

        In a game (:mod:`glimpse.catch`) every active slot's class is a move: the scene
        advances before the next glimpse is read, the reward at the end is 1 for a catch,
        ``is_success`` says whether the ball was caught, ``target_box`` is the ball's at the
        end and ``target_boxes`` ``(N, T, 4)`` the ball's at each glimpse, and there is no
        ``label`` or ``prediction``.
        """
        locations, classes, stop = self.decode_actions(actions)
        active = np.ones(self.num_envs, bool) if active is None else active
        if self.scene is not None:  # a game: the moves play out, the screens change
            self._advance_game(np.flatnonzero(active), classes)
            correct = self.task.caught(self.scene)
        else:
            correct = classes == self.labels
        final = active & ((self.taken >= self.config.glimpses) | stop)
        moving = active & ~final
        cfg = self.config
        earned = correct if cfg.class_reward == "correct" else self._log_likelihoods(actions)
        rewards = np.where(final, earned, cfg.step_reward * earned - cfg.glimpse_cost)
        rewards = np.where(active, rewards, 0.0).astype(np.float32)
        if moving.any():
            self.locations[moving] = locations[moving]
            self.visited[moving, self.taken[moving]] = locations[moving]
            self.boxes_seen[moving, self.taken[moving]] = self.target_boxes[moving]
            self.taken[moving] += 1
            self._read_glimpses(moving)
        infos: dict[str, np.ndarray] = {}
        if final.any():
            ended = {
                "label": self.labels.copy(),
                "prediction": classes,
                "is_success": correct,
                "glimpses_taken": self.taken.copy(),
                "locations": self.visited.copy(),
                "target_box": self.target_boxes.copy(),
            }
            if self.scene is not None:  # no class to name: the moves are the answers
                del ended["label"], ended["prediction"]
                ended["target_boxes"] = self.boxes_seen.copy()  # the ball moved
            for key, value in ended.items():
                infos[key], infos[f"_{key}"] = value, final.copy()
        return rewards, final, infos
