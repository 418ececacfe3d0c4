"""Catch: the share of balls each player misses on the 10,000 fixed test games, with its FLOPs
per step, as docs/environments.md shows it.

Two players that need no training are played here: a paddle that never moves and one that
moves at random (both looking at the middle of the screen). Each published Catch run (a recipe in
``agents/recipes.toml`` whose id is a Catch id, ``runs = [...]``) is read from the
``eval-test.json`` that ``glimpse eval RUN --out RUN/eval-test.json`` wrote beside it: its misses
and its FLOPs per step of play (``glimpse.agents.cost.flops_per_step``).

    python benchmarks/catch_table.py
    python benchmarks/catch_table.py --envs Glimpse/Catch64-v0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium
import numpy as np

import glimpse  # noqa: F401  (registers the ids)
from glimpse.agents.recipes import load_recipes
from glimpse.envs.evaluation import evaluate, evaluation_episodes

RESULTS = Path(__file__).resolve().parents[1] / "results"
CATCH_IDS = ("Glimpse/Catch-v0", "Glimpse/Catch64-v0")
STAY = 1  # the move "stay" (glimpse.catch.MOVES)


class Paddle:
    """A player without a model: the paddle stays, or moves at random (seeded); after the
    first glimpse (at the centre) it looks at grid cell ``(g/2, g/2)``, next to the centre."""

    def __init__(self, moves: str, grid_size: int) -> None:
        self.moves, self.centre = moves, grid_size // 2
        self.rng = np.random.default_rng(0)
        self.num_envs = 0

    def start(self, num_envs: int) -> None:
        self.num_envs = num_envs

    def act(self, observations: dict[str, np.ndarray]) -> np.ndarray:
        n = self.num_envs
        moves = np.full(n, STAY) if self.moves == "stays" else self.rng.integers(0, 3, n)
        return np.stack([np.full(n, self.centre), np.full(n, self.centre), moves], axis=1)


def untrained_rows(env_id: str) -> list[str]:
    settings = dict(gymnasium.spec(env_id).kwargs)
    rows = []
    for moves, what in (("stays", "a paddle that never moves"), ("random", "a random paddle")):
        episodes = evaluation_episodes(settings, "test", 500)
        result = evaluate(Paddle(moves, episodes.config.grid_size), episodes)
        rows.append(f"| {what} | - | {result.error_percent:.2f} | 0 |")
    return rows


def published_rows(env_id: str) -> list[str]:
    rows = []
    for recipe in load_recipes().values():
        if recipe.env_id != env_id:
            continue
        for run in recipe.runs:
            evaluated = RESULTS / run / "eval-test.json"
            if not evaluated.is_file():
                rows.append(f"| `{recipe.name}` ({recipe.agent}) | `{run}` | no eval-test.json | |")
                continue
            result = json.loads(evaluated.read_text())
            flops = result.get("flops_per_step")
            flops_text = "-" if flops is None else f"{flops / 1e6:.2f} M"
            rows.append(f"| `{recipe.name}` ({recipe.agent}) | `{run}` | {result['error']:.2f} "
                        f"| {flops_text} |")  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(CATCH_IDS), choices=CATCH_IDS)
    args = parser.parse_args()
    for env_id in args.envs:
        print(f"\n{env_id}, 10,000 test games\n")
        print("| player | run | balls missed, % | FLOPs per step |")
        print("|---|---|---|---|")
        for row in untrained_rows(env_id) + published_rows(env_id):
            print(row)


if __name__ == "__main__":
    main()
