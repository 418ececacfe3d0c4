"""Gymnasium environments over :class:`glimpse.envs.episodes.GlimpseEpisodes`.

:class:`GlimpseEnv` is the batched episode with a batch of one; :class:`GlimpseVectorEnv` is the
same episode with ``num_envs`` slots (a native ``gymnasium.vector.VectorEnv``, not copies of the
single environment). Both take the settings of :class:`glimpse.tasks.TaskConfig` and
:class:`glimpse.envs.episodes.EpisodeConfig` as keyword arguments; the registered ids fill them in.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from glimpse.drawing import glimpse_frame
from glimpse.envs.episodes import EpisodeConfig, GlimpseEpisodes, action_array
from glimpse.errors import ConfigError
from glimpse.tasks import Task, TaskConfig, make_task

RENDER_FPS = 2
NOT_STARTED = "step() was called before reset(): call reset() before step()."


def split_settings(settings: dict[str, Any]) -> tuple[TaskConfig, EpisodeConfig]:
    """Keyword ``settings`` (TaskConfig and EpisodeConfig fields) as the two configs."""
    task_fields = {f.name for f in dataclasses.fields(TaskConfig)}
    episode_fields = {f.name for f in dataclasses.fields(EpisodeConfig)}
    unknown = set(settings) - task_fields - episode_fields
    if unknown:
        raise ConfigError(
            f"Unknown environment setting(s) {', '.join(sorted(unknown))}. Valid settings: "
            f"{', '.join(sorted(task_fields | episode_fields))}."
        )
    task = TaskConfig(**{k: v for k, v in settings.items() if k in task_fields})
    episode = EpisodeConfig(**{k: v for k, v in settings.items() if k in episode_fields})
    return task, episode


def task_of(settings: dict[str, Any]) -> Task:
    """The (shared) task that environment ``settings`` describe."""
    return make_task(split_settings(settings)[0])


def make_episodes(
    num_envs: int, split: str, sequential: bool, settings: dict[str, Any]
) -> GlimpseEpisodes:
    """The batched episodes for keyword ``settings`` (TaskConfig and EpisodeConfig fields)."""
    task_config, episode_config = split_settings(settings)
    return GlimpseEpisodes(make_task(task_config), episode_config, num_envs, split, sequential)


def new_key(rng: np.random.Generator) -> np.uint64:
    """A slot's random-stream key, drawn from a Gymnasium ``np_random``."""
    return np.uint64(rng.integers(0, 2**63, dtype=np.int64))


def render_slot(episodes: GlimpseEpisodes, slot: int) -> np.ndarray:
    """The RGB frame of one slot: canvas, path so far, every scale of the current glimpse."""
    sensor = episodes.sensor
    taken = int(episodes.taken[slot])
    location = torch.from_numpy(episodes.locations[slot : slot + 1])
    height, width = episodes.task.canvas_shape[1:]
    origins = sensor.patch_origins(location, height, width)[0].numpy()
    frame = glimpse_frame(
        episodes.canvases[slot], episodes.visited[slot, :taken], origins, sensor.patch_sizes
    )
    return np.asarray(frame)


class GlimpseEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Classify an image seen only through foveated glimpses.

    ## Description

    Each episode shows one canvas of a task (MNIST, translated or cluttered MNIST,
    Fashion-MNIST, an image folder) through the glimpse sensor of Mnih et al. (2014): ``k``
    concentric square patches of sides ``g, g*s, g*s^2, ...`` around a location, each averaged to
    ``g x g``. The agent chooses where to look next and, after ``T`` glimpses, names the class.
    With ``task="catch"`` (``Glimpse/Catch-v0``) the scene is a game instead: the class part of
    every action moves a paddle, the screen changes at every step, and a catch earns 1.

    ## Observation space

    ``Dict``:

    | key        | space                                    | meaning                         |
    |------------|------------------------------------------|---------------------------------|
    | `glimpse`  | `Box(0, 1, (k, C, g, g), float32)`       | the current glimpse             |
    | `location` | `Box(-1, 1, (2,), float32)`              | where it was taken, `(x, y)`    |
    | `step`     | `Box(0, 1, (1,), float32)`               | glimpses taken before it, / `T` |

    Locations: `(0, 0)` is the canvas centre, `(-1, -1)` its top-left corner.

    ## Action space

    | `action_type`          | space                                 | meaning                    |
    |------------------------|---------------------------------------|----------------------------|
    | `discrete` (default)   | `MultiDiscrete([G, G, n_classes])`    | next cell (x, y), class    |
    | `continuous`           | `Box(-1, 1, (2 + n_classes,))`        | next (x, y), class scores  |

    The class scores' bounds are `[-score_bound, score_bound]` (1 by default): scores are
    logits, so a policy that clips its actions to the space needs a wider bound (about 5) to
    give a confident answer.

    A discrete cell `i` is the location `-1 + (2i + 1) / G` (cell centres of a `G x G` grid).
    The class part is read only at the last step (the answer); the location part of the last
    action is ignored. With `allow_stop=True` one more entry (a `{0, 1}` flag, or a score > 0
    for `continuous`) answers at once. Out-of-range values are clipped, infinite ones too (a
    location to the edge, a cell or class to the last one, class scores to `score_bound` in the
    log-likelihood reward; the answer is the highest score, so `+inf` wins). NaN, a wrong shape
    or a non-numeric action raise `ValueError`; `step()` before `reset()` raises
    `gymnasium.error.ResetNeeded`. A vector environment checks its batch by the same rules.

    ## Rewards

    The class reward, at the end: 1 for a correct answer, 0 otherwise (`class_reward="correct"`,
    the paper), or with continuous actions `class_reward="log-likelihood"`: `log softmax(scores)`
    of the true class, which grows with the probability the answer gives the label (minus the
    cross-entropy). Optional (off by default, as in the paper): `step_reward` times the class
    reward of every earlier step's class, and `-glimpse_cost` for every glimpse after the first.

    ## Episode end

    Terminates after `T` steps (`glimpses`), or earlier on a stop action. Never truncated. The
    final `info` holds `label`, `prediction`, `is_success`, `glimpses_taken`, `locations`
    (`(T, 2)`, NaN after the last glimpse) and `target_box` (top, left, bottom, right of the
    target's ink in canvas pixels, bottom and right exclusive).

    ## Arguments

    `render_mode` (`None` or `"rgb_array"`), `split` (`"train"`: fresh canvases every episode;
    `"val"`/`"test"`: the fixed canvases), `sequential` (`val`/`test` in order, wrapping, from
    the first canvas after each seeded reset; `False` draws them at random), and every field of
    `glimpse.tasks.TaskConfig` (task, size, distractors, root, ...) and
    `envs.episodes.EpisodeConfig` (glimpses, glimpse_size, num_scales, scale_factor, ...).

    ## Version history

    * v0: first release.

    ## Example

        >>> import gymnasium as gym, glimpse
        >>> env = gym.make("Glimpse/ClutteredMNIST60-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs["glimpse"].shape
        (3, 1, 12, 12)
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": RENDER_FPS}

    def __init__(
        self,
        render_mode: str | None = None,
        split: str = "train",
        sequential: bool = True,
        **settings: Any,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode={render_mode!r}; choose None or 'rgb_array'.")
        self.render_mode = render_mode
        self.episodes = make_episodes(1, split, sequential, settings)
        self.observation_space = self.episodes.observation_space
        self.action_space = self.episodes.action_space
        self._started = False
        self._needs_reset = True

    @property
    def task(self):
        return self.episodes.task

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        unseeded = self._np_random is None
        super().reset(seed=seed)
        if seed is not None or unseeded:
            self.episodes.seed(np.array([new_key(self.np_random)]))
        self.episodes.reset(np.ones(1, bool))
        self._started, self._needs_reset = True, False
        return self._observation(), {}

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if not self._started:
            raise ResetNeeded(NOT_STARTED)
        if self._needs_reset:
            raise ResetNeeded("The episode has ended: call reset() before step() to start another.")
        batched = action_array(action, self.action_space)[None]  # checked in the user's terms
        rewards, terminated, infos = self.episodes.step(batched)
        self._needs_reset = bool(terminated[0])
        info = {k: _unbox(v[0]) for k, v in infos.items() if not k.startswith("_")}
        return self._observation(), float(rewards[0]), bool(terminated[0]), False, info

    def _observation(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.episodes.observations().items()}

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array'.")
            return None
        return render_slot(self.episodes, 0)


class GlimpseVectorEnv(VectorEnv):
    """``num_envs`` glimpse episodes stepped as one batch; the card is :class:`GlimpseEnv`'s.

    Slot ``i`` after ``reset(seed=s)`` behaves exactly like ``GlimpseEnv`` after
    ``reset(seed=s + i)`` (``seed`` may also be a list of seeds). ``autoreset_mode`` is
    ``AutoresetMode.NEXT_STEP`` (default: the step after an episode ends resets that slot and
    ignores its action) or ``AutoresetMode.SAME_STEP`` (the slot is reset in the step that ends
    it; ``info["final_obs"]`` and ``info["final_info"]`` hold what the episode ended with).
    ``render`` returns one frame per slot.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["rgb_array"],
        "render_fps": RENDER_FPS,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        render_mode: str | None = None,
        split: str = "train",
        sequential: bool = True,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        **settings: Any,
    ) -> None:
        settings.pop("max_episode_steps", None)  # make_vec passes it; episodes end by themselves
        mode = AutoresetMode(autoreset_mode)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ConfigError(f"autoreset_mode={mode}; choose NEXT_STEP or SAME_STEP.")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode={render_mode!r}; choose None or 'rgb_array'.")
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.render_mode = render_mode
        self.num_envs = num_envs
        self.episodes = make_episodes(num_envs, split, sequential, settings)
        self.single_observation_space = self.episodes.observation_space
        self.single_action_space = self.episodes.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._needs_reset = np.ones(num_envs, bool)
        self._seeded = self._started = False

    @property
    def task(self):
        return self.episodes.task

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed if isinstance(seed, int) else None)
        if seed is not None or not self._seeded:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else seed
            seeds = seeds if seeds is not None else [None] * self.num_envs
            if len(seeds) != self.num_envs:
                raise ConfigError(f"Got {len(seeds)} seeds for {self.num_envs} environments.")
            keys = [new_key(seeding.np_random(s)[0]) for s in seeds]
            self.episodes.seed(np.array(keys, np.uint64))
            self._seeded = True
        self.episodes.reset(np.ones(self.num_envs, bool))
        self._needs_reset[:] = False
        self._started = True
        return self.episodes.observations(), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise ResetNeeded(NOT_STARTED)
        episodes = self.episodes
        if self.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP:
            restart = self._needs_reset.copy()
            rewards, terminated, infos = episodes.step(actions, active=~restart)
            episodes.reset(restart)
            self._needs_reset = terminated
            observations = episodes.observations()
        else:
            rewards, terminated, infos = episodes.step(actions)
            if terminated.any():
                final_observations = episodes.observations()
                infos = {
                    "final_obs": _unbatch(final_observations, terminated),
                    "_final_obs": terminated.copy(),
                    "final_info": infos,
                    "_final_info": terminated.copy(),
                }
                episodes.reset(terminated)
            observations = episodes.observations()
        truncated = np.zeros(self.num_envs, bool)
        return observations, rewards, terminated, truncated, infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array'.")
            return None
        return tuple(render_slot(self.episodes, i) for i in range(self.num_envs))


def _unbox(value: Any) -> Any:
    """A numpy scalar as the Python number it holds; arrays as they are."""
    return value.item() if np.ndim(value) == 0 else value


def _unbatch(observations: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
    """Per-slot observation dicts where ``mask`` is set (None elsewhere), as Gymnasium does."""
    out = np.full(len(mask), None, dtype=object)
    for i in np.flatnonzero(mask):
        out[i] = {k: v[i] for k, v in observations.items()}
    return out
