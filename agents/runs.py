"""Runs: from settings to a trained run directory, and from a run directory back to an agent.

A run's ``config.json`` records every setting the run used, defaults included, so the folder
says exactly what ran, forever::

    {"format": 2, "agent": "ram", "env_id": "Glimpse/MNIST-v0", "recipe": "mnist-6-ram",
     "env": {...}, "model": {...}, "train": {...}, "run": {...},
     "glimpse_version": "0.2.0", "git_commit": "8744cb9..."}

``env`` holds every field of :class:`glimpse.tasks.TaskConfig` and
:class:`glimpse.envs.episodes.EpisodeConfig`, ``run`` every field of
:class:`glimpse.agents.run_directory.RunConfig`, and the agent's own sections
(:data:`glimpse.agents.registry.AGENTS`) every field of theirs. :func:`resolve_config` makes it
from layers of settings (a recipe's, a config file's, the options typed); :func:`read_run_config`
reads it back and refuses a file with a missing or unknown setting rather than filling the gap
from today's defaults, except the settings added since (:data:`ADDED_SINCE_FORMAT_2`), which
it fills with the value that does what runs did before them. Run folders written before the
format recorded everything (format 1) are brought up to date once by :func:`migrate_config`
(``glimpse migrate RUN``), which writes what they actually ran with.

Next on the way to the training loop: :func:`train_run` calls the agent's ``train`` from
:data:`glimpse.agents.registry.AGENTS` (RAM's and the full-view baselines':
``registry._train_epochs``, which hands a learner to :class:`glimpse.agents.trainer.Trainer`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium

import glimpse
from glimpse.agents.learners import RAMLearner
from glimpse.agents.ram import RAMPredictor
from glimpse.agents.registry import AGENTS, TrainedAgent, agent
from glimpse.agents.run_directory import (
    RESULT_NEUTRAL_SETTINGS,
    RUNTIME_SETTINGS,
    RunConfig,
    RunDirectory,
    atomic_write,
    set_threads,
    validation_curve,
)
from glimpse.catch import Catch
from glimpse.envs.episodes import EpisodeConfig
from glimpse.envs.evaluation import TargetShare, standard_error_percent
from glimpse.envs.glimpse_env import split_settings
from glimpse.errors import ConfigError
from glimpse.tasks import TaskConfig

FORMAT = 2
"""The ``config.json`` format: 2 records every setting; 1 (no ``format`` key) did not."""
METADATA = ("format", "recipe", "glimpse_version", "git_commit", "migrated_from_format")
"""Keys of ``config.json`` that describe the run but do not change what it learns."""
Layer = dict[str, dict[str, Any]]
"""Settings by section (``env``, ``model``, ``train``, ``run``), some of each."""


def env_id_settings(env_id: str) -> dict[str, Any]:
    """The settings registered with ``env_id`` (a ``Glimpse/...`` id)."""
    if env_id not in gymnasium.registry or not env_id.startswith("Glimpse/"):
        known = ", ".join(sorted(i for i in gymnasium.registry if i.startswith("Glimpse/")))
        raise ConfigError(f"Unknown environment id {env_id!r}; choose one of: {known}.")
    return dict(gymnasium.spec(env_id).kwargs)


def _sections(agent_name: str) -> dict[str, type]:
    return {**agent(agent_name).sections, "run": RunConfig}


def _make(cls: type, values: dict[str, Any], where: str) -> Any:
    """``cls(**values)``, with an unknown setting named in the error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"The {where} section has unknown setting(s) {', '.join(unknown)}; valid: "
            f"{', '.join(sorted(names))}."
        )
    return cls(**values)


def resolve_config(
    agent_name: str, env_id: str, layers: Sequence[Layer], recipe: str | None = None
) -> dict[str, Any]:
    """The complete configuration of a run: every setting's default, then the environment
    id's registered settings, then each of ``layers`` in turn (a recipe's, then the options
    typed), then the settings the agent fixes. Checked before any folder is made."""
    spec = agent(agent_name)
    sections = _sections(agent_name)
    for layer in layers:
        foreign = sorted(set(layer) - {"env", *sections})
        if foreign:
            raise ConfigError(f"{agent_name} has no {' or '.join(foreign)} settings.")
    env = env_id_settings(env_id)
    for layer in layers:
        env.update(layer.get("env", {}))
    task, episode = split_settings(spec.env(env))
    if task.task == "catch" and not spec.plays_games:
        players = ", ".join(name for name, other in AGENTS.items() if other.plays_games)
        raise ConfigError(
            f"{agent_name} does not play Catch: it names one class at the end of a still "
            f"image, while in Catch every step's action moves the paddle. Train {players} on "
            f"{env_id}."
        )
    config: dict[str, Any] = {
        "format": FORMAT,
        "agent": agent_name,
        "env_id": env_id,
        "recipe": recipe,
        "env": {**dataclasses.asdict(task), **dataclasses.asdict(episode)},
    }
    for section, cls in sections.items():
        values: dict[str, Any] = {}
        for layer in layers:
            values.update(layer.get(section, {}))
        if section == "model":
            for key, env_key in spec.model_defaults_from_env.items():
                if values.get(key) is None:
                    values[key] = config["env"][env_key]
        config[section] = dataclasses.asdict(_make(cls, values, section))
    spec.check(config)
    config["glimpse_version"] = glimpse.__version__
    config["git_commit"] = git_commit()
    return config


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout the package runs from (``+dirty`` with uncommitted changes
    to tracked files), or None for an installed wheel."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():  # installed, not a checkout
        return None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty.strip() else "")


def check_complete(config: dict[str, Any], where: str) -> None:
    """Refuses a configuration that lacks a setting or has one no config class knows."""
    if config.get("format") != FORMAT:
        raise ConfigError(
            f"{where} was written by an older glimpse (format {config.get('format', 1)}) and "
            "does not record every setting the run used. Run `glimpse migrate "
            f"{Path(where).parent}` once: it writes what the run actually ran with."
        )
    missing = {"agent", "env_id", "env", "run"} - set(config)
    if missing:
        raise ConfigError(f"{where} lacks the section(s) {', '.join(sorted(missing))}.")
    classes = {"env": (TaskConfig, EpisodeConfig), **{
        section: (cls,) for section, cls in _sections(config["agent"]).items()}}  # fmt: skip
    for section, owners in classes.items():
        names = {f.name for cls in owners for f in dataclasses.fields(cls)}
        have = set(config.get(section, {}))
        if have != names:
            problems = [f"lacks {', '.join(sorted(names - have))}" if names - have else "",
                        f"has unknown {', '.join(sorted(have - names))}" if have - names else ""]
            raise ConfigError(
                f"The {section} section of {where} {' and '.join(p for p in problems if p)}: "
                "every setting must be recorded, and only those of this glimpse."
            )  # fmt: skip


def read_run_config(path: Path) -> dict[str, Any]:
    """A ``config.json`` (or a run directory holding one), checked to be complete."""
    path = path / "config.json" if path.is_dir() else path
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ConfigError(
            f"{path} does not exist: pass a run directory or its config.json."
        ) from error
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON ({error}); fix or delete it.") from error
    if not isinstance(config, dict) or "agent" not in config:
        raise ConfigError(f"{path} is not a glimpse run configuration (it names no agent).")
    agent(config["agent"])
    if config.get("format") == FORMAT:
        config = with_added_settings(config)
    check_complete(config, str(path))
    return config


def config_layer(config: dict[str, Any]) -> Layer:
    """A complete configuration's settings as one layer (to start another run from)."""
    return {s: dict(config[s]) for s in ("env", *_sections(config["agent"]))}


def config_differences(
    wanted: dict[str, Any], found: dict[str, Any], ignore: frozenset[str] = RESULT_NEUTRAL_SETTINGS
) -> list[str]:
    """``section.key: wanted vs found`` for every setting that differs, except the metadata
    and the run settings in ``ignore`` (by default those that do not change what is learned)."""
    differences = []
    for section in sorted(set(wanted) | set(found)):
        if section in METADATA:
            continue
        want, have = wanted.get(section), found.get(section)
        if not isinstance(want, dict) or not isinstance(have, dict):
            if want != have:
                differences.append(f"{section}: {want!r} vs {have!r}")
            continue
        for key in sorted(set(want) | set(have)):
            if section == "run" and key in ignore:
                continue
            if want.get(key, "<missing>") != have.get(key, "<missing>"):
                differences.append(
                    f"{section}.{key}: {want.get(key, '<missing>')!r} vs "
                    f"{have.get(key, '<missing>')!r}"
                )
    return differences


def run_name(config: dict[str, Any]) -> str:
    run = config["run"]
    if run["name"]:
        return run["name"]
    if config.get("recipe"):
        return f"{config['recipe']}-seed{run['seed']}"
    short = config["env_id"].split("/")[-1].removesuffix("-v0").lower()
    return f"{short}-{config['agent']}-seed{run['seed']}"


def train_run(
    config: dict[str, Any], resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Trains (or resumes) the run ``config`` describes; returns the summary of ``test.json``.

    The run folder is made (or, resuming, its ``config.json`` rewritten) only once the run can
    start: the training loops call :meth:`RunDirectory.start` after loading the data, building
    the model and reading back any saved state, so a failed start leaves no trace."""
    check_complete(config, "the configuration")
    spec = agent(config["agent"])
    settings = RunConfig(**config["run"])
    run = RunDirectory(Path(settings.runs_dir) / run_name(config))
    if not resume:
        run.refuse_overwrite()
    set_threads(settings.threads)
    return spec.train(spec, config, run, resume, progress)


def refuse_resume_changes(run_dir: str | Path, options: Sequence[str]) -> None:
    """The error for ``--resume`` with settings to change (``options``, as typed), if any:
    a run continues with its own ``config.json``; only :data:`RUNTIME_SETTINGS` may change."""
    if options:
        raise ConfigError(
            f"--resume continues {run_dir} with the settings in its config.json, so it takes "
            f"no {', '.join(options)}; only "
            f"{' and '.join('--' + name for name in RUNTIME_SETTINGS)} may change. To train "
            f"with other settings, start a new run: `glimpse train --config "
            f"{Path(run_dir) / 'config.json'} --name NEW ...` with the options to change."
        )


def resume_run(
    run_dir: Path, runtime: dict[str, Any] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Continues the run in ``run_dir`` (wherever it now lies) with its own ``config.json``.

    ``runtime`` may change the :data:`RUNTIME_SETTINGS` only, say ``{"threads": 1}`` for a run
    that continues on a busy machine; the new values are written to ``config.json``.
    """
    config = read_run_config(run_dir)
    changed = sorted(set(runtime or {}) - set(RUNTIME_SETTINGS))
    refuse_resume_changes(run_dir, ["--" + name.replace("_", "-") for name in changed])
    config["run"].update(runtime or {}, runs_dir=str(run_dir.parent), name=run_dir.name)
    return train_run(config, resume=True, progress=progress)


def load_agent(run_dir: Path, checkpoint: str = "best") -> TrainedAgent:
    """The trained agent of any run directory, ready to evaluate or visualise."""
    config = read_run_config(run_dir)
    spec = agent(config["agent"])
    return spec.load(spec, config, run_dir, checkpoint)


def load_predictor(run_dir: str | Path, checkpoint: str = "best") -> RAMPredictor:
    """A trained RAM run as a :class:`glimpse.agents.ram.RAMPredictor`:
    ``predict(images) -> classes, locations``, whole episodes without the environment."""
    learner = load_agent(Path(run_dir), checkpoint)
    if not isinstance(learner, RAMLearner):
        raise ConfigError(
            f"{run_dir} is a {read_run_config(Path(run_dir))['agent']} run; load_predictor runs "
            "RAM's episodes inside the model. Load other runs with load_agent."
        )
    return learner.predictor()


# -- migration of format 1 ---------------------------------------------------------------------

_MOVED_TO_RAM = ("reinforce_weight", "location_lr_factor", "rollouts_per_image")
"""Settings that format 1 kept in ``train`` and format 2 keeps in RAM's ``model``."""
RENAMED = {("model", "channels"): "conv_channels"}
"""Format 1's names of settings renamed since (the full-view baselines' first convolution)."""
BEFORE_OPTION: dict[tuple[str, str], Any] = {}
"""What runs did before a setting existed, where that differs from the setting's default
today: empty, because no default of the seven config classes (task, episodes, RAM, PPO,
baselines, training, run) has changed since it was added (checked on 2026-12-05 over every
commit of the files that define them). A format-1 PPO run without ``head_units`` predates the
option: it ran with SB3's 64, the option's default, not the 256 that the old hyperparameter
file gave later runs."""


ADDED_SINCE_FORMAT_2: dict[tuple[str, str], Any] = {
    ("model", "gae_lambda"): 1.0,
    ("model", "baseline_core"): False,
    ("model", "entropy_weight"): 0.0,
    ("env", "screen"): False,
    ("model", "glimpse_encoder"): "linear",
    ("model", "location_learner"): "reinforce",
    ("model", "ppo_epochs"): 4,
    ("model", "ppo_clip"): 0.2,
    ("train", "init_from"): None,
    ("model", "glimpse_scales"): "mean",
    ("train", "max_grad_norm"): 0.0,
    ("model", "glimpse_filters"): 32,
    ("model", "precision"): "float32",
}
"""Settings added after format 2 (2026-12-05: for games, RAM's learning rule and the full-view
observation; RAM's convolutional glimpse network and PPO learner; starting from another run's
weights; how PPO's glimpse network reads the scales; gradient clipping; 2026-12-06: the
convolutional glimpse network's filters, the full-view baselines' training arithmetic), with
the value that does what runs did before them: a format-2 configuration that lacks one ran so,
and is read with it filled in (:func:`with_added_settings`), rather than refused or rewritten."""


def with_added_settings(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with each setting of :data:`ADDED_SINCE_FORMAT_2` that its agent has and
    it lacks filled in with the value that reproduces the run (``config`` itself, not a copy,
    where none is missing)."""
    sections: dict[str, tuple[type, ...]] = {
        "env": (TaskConfig, EpisodeConfig),
        **{name: (cls,) for name, cls in _sections(config["agent"]).items()},
    }
    filled = config
    for (section, key), value in ADDED_SINCE_FORMAT_2.items():
        owners = sections.get(section, ())
        known = any(key in {f.name for f in dataclasses.fields(cls)} for cls in owners)
        if known and section in filled and key not in filled[section]:
            filled = {**filled, section: {**filled[section], key: value}}
    return filled


def migrate_config(config: dict[str, Any]) -> dict[str, Any]:
    """A format-1 configuration brought to format 2: every setting it ran with recorded.

    A format-2 configuration is returned as it is. Settings a format-1 file lacks were added
    to glimpse after the run; it ran with the behaviour before them, which is the default
    they were added with (:data:`BEFORE_OPTION` where that default has changed since). PPO's
    runs never took their values from a hyperparameter file for keys they lack: the file's
    entries came with the keys' introduction or later, and a run records the values it used.
    """
    if config.get("format") == FORMAT:
        return with_added_settings(config)
    spec = agent(config["agent"])
    env, model, train = dict(config["env"]), dict(config["model"]), dict(config["train"])
    for (section, old), new in RENAMED.items():
        values = model if section == "model" else train
        if old in values and new in {f.name for c in spec.sections.values()
                                     for f in dataclasses.fields(c)}:  # fmt: skip
            values[new] = values.pop(old)
    for key in _MOVED_TO_RAM:
        value = train.pop(key, None)
        if spec.name == "ram" and value is not None:
            model[key] = value
    run_names = {f.name for f in dataclasses.fields(RunConfig)}
    run = {key: train.pop(key) for key in list(train) if key in run_names}
    values = {"model": model, "train": train, "run": run}
    migrated: dict[str, Any] = {
        "format": FORMAT,
        "agent": spec.name,
        "env_id": config["env_id"],
        "recipe": config.get("recipe"),
    }
    task, episode = split_settings(spec.env({**_before_options("env", env), **env}))
    migrated["env"] = {**dataclasses.asdict(task), **dataclasses.asdict(episode)}
    for section, cls in _sections(spec.name).items():
        own = values[section]
        given = {k: v for k, v in own.items() if k in {f.name for f in dataclasses.fields(cls)}}
        migrated[section] = dataclasses.asdict(cls(**{**_before_options(section, given),
                                                      **given}))  # fmt: skip
    migrated["glimpse_version"] = config.get("glimpse_version", "0.1.0")
    migrated["git_commit"] = config.get("git_commit")
    migrated["migrated_from_format"] = config.get("format", 1)
    return migrated


def _before_options(section: str, given: dict[str, Any]) -> dict[str, Any]:
    """:data:`BEFORE_OPTION`'s values for the settings of ``section`` not in ``given``."""
    return {key: value for (s, key), value in BEFORE_OPTION.items()
            if s == section and key not in given}  # fmt: skip


def migrate_run(run_dir: Path) -> bool:
    """Rewrites ``run_dir/config.json`` in format 2; False if it already was."""
    path = run_dir / "config.json"
    try:
        config = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path} cannot be read ({error}): name a run directory.") from error
    if config.get("format") == FORMAT:
        return False
    path.write_text(json.dumps(migrate_config(config), indent=2) + "\n")
    return True


def evaluate_run(
    run_dir: Path,
    split: str = "test",
    samples: int = 1,
    checkpoint: str = "best",
    out: Path | None = None,
    looking_at_target: bool = True,
    locations: str = "learned",
) -> dict[str, Any]:
    """Error of a saved run on a whole fixed split; also written as JSON to ``out`` if given.

    With ``looking_at_target``, also where it looked (``on_target``, in percent): for glimpse
    agents how often the finest patch overlapped the target (with mean locations), for soft
    attention its weight on the target's cells (:meth:`TrainedAgent.looking`); nothing for the
    models that read the whole canvas at once (the full-view baselines, a policy on the
    ``screen``). ``locations`` other than ``"learned"`` make a
    RAM model look where it is told (:meth:`RAMLearner.evaluate_locations`).

    The run folder is left as it is, so evaluating a published run keeps the repository clean.
    """
    if samples < 1:
        raise ConfigError(f"--samples {samples} must be at least 1.")
    config = read_run_config(run_dir)
    if config["env"].get("screen"):
        looking_at_target = False  # it reads the whole screen: its glimpses go unread
    trained = load_agent(run_dir, checkpoint)
    images = trained.task.split_size(split)
    looking: TargetShare | None = None
    if locations == "learned":
        if looking_at_target:
            error, looking = trained.error_and_looking(split, samples)
        else:
            error = trained.error(split, samples)
    else:
        if not isinstance(trained, RAMLearner):
            raise ConfigError(
                f"--locations {locations} makes a trained RAM model look elsewhere; "
                f"{run_dir} is a {config['agent']} run: leave --locations out."
            )
        if samples != 1:
            raise ConfigError(
                f"--locations {locations} runs the model once, looking where it is told: "
                "leave --samples out (Monte Carlo averaging samples the learned locations)."
            )
        told = trained.evaluate_locations(split, locations)
        error = told.error_percent
        if looking_at_target:
            sensor = trained.train_episodes.sensor
            looking = told.target_share(sensor, *trained.task.canvas_shape[1:])
    result: dict[str, Any] = {
        "agent": config["agent"],
        "game": isinstance(trained.task, Catch),  # the error is then the share of misses
        "split": split,
        "checkpoint": checkpoint,
        "samples": samples,
        "locations": locations,
        "error": error,
        "standard_error": standard_error_percent(error, images),
        "images": images,
    }
    if looking is not None:
        result["on_target"] = dataclasses.asdict(looking)
    if result["game"]:  # what one step of play costs: the column beside the catch rate
        from glimpse.agents.cost import flops_per_step

        policy = trained.policy()  # type: ignore[attr-defined]  # RAM and PPO play games
        result["flops_per_step"] = flops_per_step(policy, config["env"])
    if out is not None:
        atomic_write(out, lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
    return result


def curves_table(run_dirs: list[Path], every: int = 1) -> str:
    """Markdown: the runs' validation errors side by side, at every ``every``-th epoch (or step
    count that is a multiple of ``every``) and at each run's first and last; then each run's
    best validation error (and where) and its test error. A row's single lowest error is bold.
    Columns are named by the runs' folder names, or by their paths as given where two folder
    names are the same."""
    if every < 1:
        raise ConfigError(f"--every {every} must be at least 1.")
    curves = [validation_curve(run) for run in run_dirs]
    axes = {axis for axis, _ in curves}
    if len(axes) > 1:
        raise ConfigError(
            "These runs count progress differently (epochs for RAM and the baselines, env steps "
            "for PPO): compare runs of one kind at a time."
        )
    axis = axes.pop()
    names = [run.name for run in run_dirs]
    if len(set(names)) < len(names):
        names = [str(run) for run in run_dirs]
    ends = {x for _, errors in curves if errors for x in (min(errors), max(errors))}
    points = sorted({x for _, errors in curves for x in errors if x % every == 0} | ends)
    lines = [
        f"| {axis} | " + " | ".join(names) + " |",
        "|---" * (len(run_dirs) + 1) + "|",
    ]
    for x in points:
        lines.append(_curves_row(f"{x:,}", [errors.get(x) for _, errors in curves]))
    best_cells = []
    for _, errors in curves:
        x, error = min(errors.items(), key=lambda item: item[1]) if errors else (0, None)
        best_cells.append("-" if error is None else f"{error:.2f} ({axis} {x:,})")
    lines.append("| best validation | " + " | ".join(best_cells) + " |")
    tests = [_recorded_test_error(run) for run in run_dirs]
    lines.append(_curves_row("test", tests))
    return "\n".join(lines)


def _curves_row(label: str, errors: list[float | None]) -> str:
    known = [error for error in errors if error is not None]
    lowest = min(known, default=None)
    if known.count(lowest) != 1 or len(known) == 1:  # bold marks a single leader
        lowest = None
    cells = [
        "-" if error is None else f"**{error:.2f}**" if error == lowest else f"{error:.2f}"
        for error in errors
    ]
    return f"| {label} | " + " | ".join(cells) + " |"


def _recorded_test_error(run_dir: Path) -> float | None:
    path = run_dir / "test.json"
    return float(json.loads(path.read_text())["test_error"]) if path.is_file() else None


def visualise_run(
    run_dir: Path,
    out: Path | None = None,
    n: int = 16,
    split: str = "test",
    checkpoint: str = "best",
) -> tuple[Path, Path | None]:
    """Draws what the run's agent did on the first ``n`` canvases of ``split`` into ``out``
    (default ``<run>/trajectories.gif``), titled with the run, its task and its test error.

    Hard attention (RAM, PPO): its glimpse trajectories, also kept beside the picture (the same
    name with ``.npz``). Soft attention: its attention weights at each step. The CNN and FC
    baselines, and a policy on the whole ``screen``, attend to nothing: refused. Returns the
    picture's path and the trajectories' (None for soft attention).
    """
    from glimpse.agents.visualise import run_title

    if n < 1:
        raise ConfigError(f"--n {n} must be at least 1.")
    out = run_dir / "trajectories.gif" if out is None else out
    config = read_run_config(run_dir)
    if config["env"].get("screen"):
        raise ConfigError(
            f"{run_dir} plays from the whole screen (--screen): it reads no glimpses, so there "
            "are none to draw. `glimpse eval` gives its catch rate; glimpse viz draws RAM and "
            "PPO trajectories and soft attention maps."
        )
    test_error = _recorded_test_error(run_dir) if checkpoint == "best" else None
    name = run_dir.name if checkpoint == "best" else f"{run_dir.name} ({checkpoint} checkpoint)"
    game = config["env"].get("task") == "catch"
    title = run_title(name, config["env_id"].removeprefix("Glimpse/"), test_error, game)
    out.parent.mkdir(parents=True, exist_ok=True)
    trajectories = load_agent(run_dir, checkpoint).draw(out, n, split, title)
    if trajectories is None:
        return out, None
    npz = out.with_suffix(".npz")
    trajectories.save(npz)
    return out, npz
