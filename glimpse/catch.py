"""Catch (Mnih et al. 2014, section 4.2): a ball falls, a paddle at the bottom must catch it.

The scene changes under the glimpse: at every step the agent says where to look next and moves
the paddle, the ball and the paddle move, and the screen is drawn again. The paper gives the
24 x 24 screen, the 1-pixel ball dropped from the top at a random angle, the 2-pixel paddle that
moves left, right or stays, and the reward (1 for a catch, else 0). The rest is ours:

* Everything is measured in *units* of ``size // 24`` pixels (1 on the paper's screen, 2 on a
  64 x 64 one): the ball is 1 x 1 unit, the paddle 2 units wide and 1 high, in the bottom row.
* The ball starts in the top row at a uniformly random column, with a horizontal speed of
  ``tan(angle)`` units per step, the angle uniform in [-45, 45] degrees; it falls one unit per
  step and bounces off the side walls (its position is kept exactly and drawn at the nearest
  whole pixel).
* The paddle starts in the middle and moves one unit per step: left, stay or right (the
  "class" of an action: 0, 1, 2), stopping at the walls.
* A game lasts until the ball reaches the bottom row: ``size // unit - 1`` steps (23 on the
  paper's screen, 31 on 64 x 64). The last step's move still counts; the ball is caught if it
  then overlaps the paddle.

:class:`Catch` offers what :class:`glimpse.envs.episodes.GlimpseEpisodes` needs of a task
(canvas shape, splits, fixed evaluation games) plus the game itself (:meth:`Catch.start`,
:meth:`Catch.advance`, :meth:`Catch.draw`, :meth:`Catch.caught`), vectorised over games.
"""

from __future__ import annotations

import numpy as np

from glimpse.errors import ConfigError

SCREEN_UNITS = 24  # the paper's screen, in units
MOVES = ("left", "stay", "right")
STATE = ("ball_x", "ball_vx", "ball_y", "paddle_x")  # in pixels; columns of the state array
TEST_GAMES = 10_000


class Catch:
    """The Catch game on a ``size x size`` screen, for ``GlimpseEpisodes``; see the module doc.

    ``config`` is the :class:`glimpse.tasks.TaskConfig` with ``task="catch"``: its ``size``
    (default 24), ``val_size`` (validation games) and ``canvas_seed`` (the fixed games) apply.
    """

    dynamic = True  # the scene advances with every step
    class_names = MOVES
    channels = 1
    draws_per_canvas = 2  # the ball's first column and its angle
    state_width = len(STATE)

    def __init__(self, config: object) -> None:
        from glimpse.tasks import TaskConfig

        assert isinstance(config, TaskConfig)
        self.config = config
        self.canvas_size = config.canvas_size
        self.unit = self.canvas_size // SCREEN_UNITS
        if self.unit < 1:
            raise ConfigError(
                f"A Catch screen needs at least {SCREEN_UNITS} pixels a side (size="
                f"{self.canvas_size}); pass size=24 (the paper's) or larger."
            )
        self.steps = self.canvas_size // self.unit - 1
        self._fixed: dict[str, np.ndarray] = {}

    def __reduce__(self) -> tuple[object, ...]:
        from glimpse.tasks import make_task

        return (make_task, (self.config,))

    @property
    def num_classes(self) -> int:
        return len(MOVES)

    @property
    def canvas_shape(self) -> tuple[int, int, int]:
        return (1, self.canvas_size, self.canvas_size)

    def split_size(self, split: str) -> int:
        """Games of a split: the fixed validation and test games; ``train`` draws fresh ones
        (its size only scales the draw of an unused image index)."""
        return {"val": self.config.val_size, "test": TEST_GAMES}.get(split, TEST_GAMES)

    def fixed_starts(self, split: str) -> np.ndarray:
        """The uniforms ``(N, 2)`` that start the fixed games of ``split``, from ``canvas_seed``."""
        if split not in self._fixed:
            from glimpse.tasks import SPLITS

            rng = np.random.default_rng([self.config.canvas_seed, SPLITS.index(split)])
            self._fixed[split] = rng.random((self.split_size(split), self.draws_per_canvas))
        return self._fixed[split]

    # -- the game, vectorised over games ------------------------------------------------------

    def start(self, uniforms: np.ndarray) -> np.ndarray:
        """First states ``(n, 4)`` (see :data:`STATE`) from uniforms ``(n, 2)`` in [0, 1)."""
        unit, size = self.unit, self.canvas_size
        n = len(uniforms)
        state = np.zeros((n, self.state_width))
        state[:, 0] = np.floor(uniforms[:, 0] * (size // unit)) * unit  # a whole column
        state[:, 1] = unit * np.tan(np.radians(uniforms[:, 1] * 90.0 - 45.0))
        state[:, 3] = (size // unit - 2) // 2 * unit  # the paddle in the middle
        return state

    def advance(self, state: np.ndarray, moves: np.ndarray) -> np.ndarray:
        """The states one step later, the paddles moved by ``moves`` (0 left, 1 stay, 2 right)."""
        unit, right_wall = self.unit, self.canvas_size - self.unit
        new = state.copy()
        x = new[:, 0] + new[:, 1]
        bounced = (x < 0) | (x > right_wall)
        x = np.where(x < 0, -x, np.where(x > right_wall, 2 * right_wall - x, x))
        new[:, 0], new[:, 1] = x, np.where(bounced, -new[:, 1], new[:, 1])
        new[:, 2] = np.minimum(new[:, 2] + unit, right_wall)
        paddle = new[:, 3] + (np.asarray(moves) - 1) * unit
        new[:, 3] = np.clip(paddle, 0, self.canvas_size - 2 * unit)
        return new

    def ball_boxes(self, state: np.ndarray) -> np.ndarray:
        """The ball's box ``(n, 4)``: top, left, bottom, right in pixels (bottom, right
        exclusive), as :mod:`glimpse.tasks` defines target boxes."""
        left = np.rint(state[:, 0]).astype(np.int64)
        top = state[:, 2].astype(np.int64)
        return np.stack([top, left, top + self.unit, left + self.unit], axis=1)

    def caught(self, state: np.ndarray) -> np.ndarray:
        """Whether each ball overlaps its paddle (meaningful once the ball is at the bottom)."""
        boxes = self.ball_boxes(state)
        paddle = state[:, 3].astype(np.int64)
        bottom = state[:, 2] >= self.canvas_size - self.unit
        return bottom & (boxes[:, 1] < paddle + 2 * self.unit) & (boxes[:, 3] > paddle)

    def draw(self, state: np.ndarray) -> np.ndarray:
        """The screens ``(n, 1, size, size)`` uint8: ball and paddle at 255 on black."""
        n, size, unit = len(state), self.canvas_size, self.unit
        screens = np.zeros((n, 1, size, size), np.uint8)
        boxes = self.ball_boxes(state)
        offsets = np.arange(unit)
        rows = (boxes[:, 0, None] + offsets)[:, :, None]
        cols = (boxes[:, 1, None] + offsets)[:, None, :]
        screens[np.arange(n)[:, None, None], 0, rows, cols] = 255
        paddle = state[:, 3].astype(np.int64)
        paddle_cols = (paddle[:, None] + np.arange(2 * unit))[:, None, :]
        paddle_rows = (size - unit + offsets)[None, :, None]
        screens[np.arange(n)[:, None, None], 0, paddle_rows, paddle_cols] = 255
        return screens
