"""Named recipes: fully specified training setups, kept in one file (``recipes.toml`` beside
this module), with inheritance so that a variant names only what it changes.

A recipe gives the agent, the environment id and, per config section (``env``, ``model``,
``train``, ``run``), the settings that differ from the defaults; every other setting takes the
value the environment id registers (``Glimpse/ClutteredMNIST60-v0``: 8 glimpses, 3 scales;
:mod:`glimpse.registration`), else the default of its config class, and the run's
``config.json`` records them all (:func:`glimpse.agents.runs.resolve_config`). A published
recipe (one with ``runs``) is frozen: the tests resolve it and compare it field by field with
the committed runs' ``config.json``, so changing a default or a recipe that a published
figure came from fails them. A new setup gets a new name, as Gymnasium bumps ``-v0`` to
``-v1``.

An entry of ``recipes.toml``::

    [mnist-7-ram]
    inherits = "mnist-6-ram"          # everything of mnist-6-ram, then the lines below
    description = "28 x 28 MNIST, 7 glimpses of 8 x 8"
    paper = "1.07 (set B)"            # the paper's figure for the same setup, if it has one
    runs = ["mnist-7-ram-seed1", "mnist-7-ram-seed2"]   # published runs in results/
    env = { glimpses = 7 }

``agent`` and ``env_id`` are inherited, and the sections are merged key by key;
``description``, ``paper`` and ``runs`` belong to each entry alone.
"""

from __future__ import annotations

import difflib
import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glimpse.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RECIPES = Path(__file__).with_name("recipes.toml")
SECTIONS = ("env", "model", "train", "run")
_OWN = ("description", "paper", "runs")
_KEYS = {"agent", "env_id", "inherits", *_OWN, *SECTIONS}


@dataclass(frozen=True)
class Recipe:
    """A named training setup: agent, environment id and the settings of each section."""

    name: str
    agent: str
    env_id: str
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    paper: str = ""
    runs: tuple[str, ...] = ()

    def layer(self) -> dict[str, dict[str, Any]]:
        """The settings as one layer of :func:`glimpse.agents.runs.resolve_config`."""
        return {section: dict(values) for section, values in self.settings.items()}


@functools.cache
def load_recipes(path: Path = RECIPES) -> dict[str, Recipe]:
    """Every recipe of the file at ``path``, inheritance resolved, in the file's order."""
    with open(path, "rb") as f:
        table = tomllib.load(f)
    recipes: dict[str, Recipe] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> Recipe:
        if name in recipes:
            return recipes[name]
        if name in chain:
            raise ConfigError(f"{path}: recipes inherit in a circle: {' -> '.join(chain)}.")
        if name not in table:
            raise ConfigError(f"{path}: {chain[-1]} inherits from {name!r}, which is not there.")
        entry = table[name]
        unknown = set(entry) - _KEYS
        if unknown:
            raise ConfigError(
                f"{path} [{name}] has unknown keys {sorted(unknown)}; a recipe has "
                f"{', '.join(sorted(_KEYS))}."
            )
        parent = resolve(entry["inherits"], (*chain, name)) if "inherits" in entry else None
        settings = {s: dict(values) for s, values in (parent.settings if parent else {}).items()}
        for section in SECTIONS:
            settings.setdefault(section, {}).update(entry.get(section, {}))
        agent = entry.get("agent", parent.agent if parent else None)
        env_id = entry.get("env_id", parent.env_id if parent else None)
        if agent is None or env_id is None:
            raise ConfigError(f"{path} [{name}] names no agent or env_id (nor inherits them).")
        recipe = Recipe(
            name, agent, env_id, {s: v for s, v in settings.items() if v},
            entry.get("description", ""), entry.get("paper", ""), tuple(entry.get("runs", ())),
        )  # fmt: skip
        recipes[name] = recipe
        return recipe

    for name in table:
        resolve(name, ())
    return {name: recipes[name] for name in table}


def recipe(name: str) -> Recipe:
    """The recipe called ``name``, or an error naming the closest ones."""
    recipes = load_recipes()
    if name not in recipes:
        close = difflib.get_close_matches(name, recipes, n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"No recipe {name!r}.{hint} `glimpse recipes` lists them.")
    return recipes[name]
