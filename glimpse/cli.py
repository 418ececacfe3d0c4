"""The ``glimpse`` command line.

Options are generated from the config dataclasses (:mod:`glimpse.config`), so ``--help`` shows
the same defaults and texts as the API docs. Errors the user can fix (a missing file, a bad
value) print one paragraph and exit with status 2; see :mod:`glimpse.errors`.

Next on the way to the training loop: ``glimpse train`` resolves the settings and writes the run
folder in :mod:`glimpse.agents.runs` (:func:`~glimpse.agents.runs.train_run`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from glimpse.config import add_options, from_options, given_options
from glimpse.errors import ConfigError, GlimpseError

EXIT_USER_ERROR = 2
MESSAGE_WIDTH = 90
CHECKPOINT_HELP = "best: the lowest validation error; last: where training stopped"


def _data_check(args: argparse.Namespace) -> int:
    from glimpse.data import DATASETS, check_dataset, resolve_data_dir

    print(f"data directory: {resolve_data_dir(args.data_dir)}")
    all_ok = True
    for dataset in DATASETS.values():
        status = check_dataset(dataset, args.data_dir)
        all_ok &= status.ok
        print(f"{status.name:>14}: {'ok' if status.ok else 'MISSING'}  {status.detail}")
    return 0 if all_ok else 1


def _data_show(args: argparse.Namespace) -> int:
    from glimpse.drawing import canvas_grid
    from glimpse.tasks import TaskConfig, make_task

    task = make_task(from_options(TaskConfig, args))
    if args.split == "train":
        rng = np.random.default_rng(args.seed)
        indices = rng.choice(task.split_size("train"), size=args.n, replace=False)
        canvases, labels = task.canvases("train", indices, rng)
    else:
        fixed = task.fixed_canvases(args.split)
        canvases, labels = fixed.images[: args.n], fixed.labels[: args.n]
    captions = [f"{i}: {task.class_names[label]}" for i, label in enumerate(labels)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas_grid(canvases, captions, columns=args.columns).save(out)
    print(f"wrote {len(canvases)} {args.split} canvases {task.canvas_shape} to {out}")
    return 0


TRAIN_USAGE = """\
usage: glimpse train --recipe NAME [--seed N] [--name RUN] [options of its agent]
       glimpse train AGENT --env ID [options of AGENT]
       glimpse train --config RUN/config.json [options of its agent]
       glimpse train --resume RUN [--threads N] [--device DEVICE]

Train an agent on a Glimpse environment; writes a run directory. Settings come from their
defaults, the environment id, the recipe (or --config), then the options typed. An option
the agent does not use is an error.

agents: {agents}
`glimpse train AGENT --help` lists an agent's options; `glimpse recipes` the named recipes.
"""


def _prescan(tokens: list[str], option: str) -> str | None:
    """The value given to ``option`` among ``tokens`` (``--x V`` or ``--x=V``), if any."""
    for i, token in enumerate(tokens):
        if token == option and i + 1 < len(tokens):
            return tokens[i + 1]
        if token.startswith(option + "="):
            return token.split("=", 1)[1]
    return None


def train_parser(agent_name: str) -> argparse.ArgumentParser:
    """``glimpse train AGENT``'s options: the source of settings, then the settings the agent
    uses (environment, its own sections, the run's), generated from the config classes."""
    from glimpse.agents.registry import agent
    from glimpse.agents.run_directory import RunConfig
    from glimpse.envs.episodes import EpisodeConfig
    from glimpse.tasks import TaskConfig

    spec = agent(agent_name)
    parser = _Parser(
        prog=f"glimpse train {agent_name}", formatter_class=_HelpFormatter, allow_abbrev=False,
        usage=f"glimpse train {agent_name} [--recipe NAME | --env ID | --config FILE] [options]",
        description=f"Train {agent_name}: {spec.summary}. Settings come from their defaults, "
        "the environment id, the recipe (or --config), then the options typed here.",
    )  # fmt: skip
    source = parser.add_argument_group("where the settings come from")
    source.add_argument("--recipe", default=None, help="a named recipe (glimpse recipes)")
    source.add_argument("--env", default=None, help="environment id, e.g. Glimpse/MNIST-v0")
    source.add_argument("--config", default=None, help="config.json of a run to start from")
    source.add_argument(
        "--resume", default=None, metavar="RUN",
        help="continue this run directory with its settings (--threads and --device may change)",
    )  # fmt: skip
    source.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar"
    )
    for cls in (TaskConfig, EpisodeConfig):
        add_options(parser, cls, "env", only_given=True, names=spec.env_settings,
                    title=f"environment ({cls.__name__})")  # fmt: skip
    for section, cls in {**spec.sections, "run": RunConfig}.items():
        add_options(parser, cls, section, only_given=True, title=f"{section} ({cls.__name__})")
    return parser


def _typed_settings(agent_name: str, options: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The settings typed on the command line, by section (sections with none left out)."""
    from glimpse.agents.registry import agent
    from glimpse.agents.run_directory import RunConfig
    from glimpse.envs.episodes import EpisodeConfig
    from glimpse.tasks import TaskConfig

    typed = {"env": {**given_options(TaskConfig, options, "env"),
                     **given_options(EpisodeConfig, options, "env")}}  # fmt: skip
    for section, cls in {**agent(agent_name).sections, "run": RunConfig}.items():
        typed[section] = given_options(cls, options, section)
    return {section: values for section, values in typed.items() if values}


def _foreign_option(agent_name: str, option: str) -> ConfigError:
    """The error for an option ``glimpse train AGENT`` does not have."""
    from glimpse.agents.registry import AGENTS

    owners = [
        name for name in AGENTS
        if name != agent_name and option in train_parser(name)._option_string_actions
    ]  # fmt: skip
    if owners:
        return ConfigError(
            f"{option} is not an option of {agent_name} (it is one of {', '.join(owners)}); "
            f"`glimpse train {agent_name} --help` lists {agent_name}'s options."
        )
    return ConfigError(
        f"unrecognised option {option} for {agent_name}; `glimpse train {agent_name} --help` "
        "lists its options."
    )


@dataclass(frozen=True)
class TrainCommand:
    """What a ``glimpse train ...`` command line asks for: a new run's whole configuration, or
    a run to resume with the runtime settings typed (``--threads``, ``--device``)."""

    agent: str
    config: dict[str, Any] | None
    resume: Path | None
    runtime: dict[str, Any]
    progress: bool


def _agent_to_train(
    named: str | None, found: str | None, source: str | None, tokens: list[str]
) -> str | None:
    """The agent a ``glimpse train`` command trains: the one ``named`` on the command line, or
    the one its recipe, config file or run (``source``) trains (``found``), which must agree.
    ``None`` when neither gives one and help was asked for (the usage is then printed)."""
    from glimpse.agents.registry import AGENTS

    agent_name = named or found
    if agent_name is None:
        if not {"-h", "--help"} & set(tokens):
            print(TRAIN_USAGE.format(agents=", ".join(AGENTS)), file=sys.stderr)
            raise ConfigError("name an agent (glimpse train ram ...) or a --recipe.")
        print(TRAIN_USAGE.format(agents=", ".join(AGENTS)))
        return None
    if found is not None and found != agent_name:
        raise ConfigError(
            f"{source} trains {found}, not {agent_name}: leave the agent out or name {found}."
        )
    return agent_name


def parse_train_command(tokens: list[str]) -> TrainCommand | None:
    """Reads ``glimpse train``'s arguments (``tokens``, after ``train``) into a
    :class:`TrainCommand`; ``None`` when only help was asked for (and printed)."""
    from glimpse.agents.recipes import recipe
    from glimpse.agents.run_directory import RUNTIME_SETTINGS
    from glimpse.agents.runs import (
        config_layer,
        read_run_config,
        refuse_resume_changes,
        resolve_config,
    )

    tokens = list(tokens)
    named = tokens.pop(0) if tokens and not tokens[0].startswith("-") else None
    recipe_name, config_file = _prescan(tokens, "--recipe"), _prescan(tokens, "--config")
    resume = _prescan(tokens, "--resume")
    base_recipe = recipe(recipe_name) if recipe_name else None
    base = read_run_config(Path(resume or config_file)) if resume or config_file else None
    found = base_recipe.agent if base_recipe else base["agent"] if base else None
    agent_name = _agent_to_train(named, found, recipe_name or resume or config_file, tokens)
    if agent_name is None:
        return None
    parser = train_parser(agent_name)
    options, unknown = parser.parse_known_args(tokens)
    if unknown:
        raise _foreign_option(agent_name, unknown[0].split("=", 1)[0])
    typed = _typed_settings(agent_name, options)
    if resume:
        allowed = {"--resume", "--progress", "--no-progress"} | {
            "--" + name for name in RUNTIME_SETTINGS}  # fmt: skip
        refuse_resume_changes(resume, [option for option in tokens if option.startswith("--")
                                       and option.split("=")[0] not in allowed])  # fmt: skip
        return TrainCommand(agent_name, None, Path(resume), typed.get("run", {}), options.progress)
    layers = [base_recipe.layer() if base_recipe else config_layer(base) if base else {}]
    env_id = options.env or (base_recipe.env_id if base_recipe else None) or (
        base["env_id"] if base else None)  # fmt: skip
    if env_id is None:
        raise ConfigError(f"Name the environment: `glimpse train {agent_name} --env ID`.")
    changes_recipe = any(s != "run" for s in typed) or (
        base_recipe is not None and env_id != base_recipe.env_id)  # fmt: skip
    keep = base_recipe.name if base_recipe and not changes_recipe else None
    config = resolve_config(agent_name, env_id, [*layers, typed], recipe=keep)
    return TrainCommand(agent_name, config, None, {}, options.progress)


def _train(args: argparse.Namespace) -> int:
    from glimpse.agents.runs import resume_run, train_run

    command = parse_train_command(args.tokens)
    if command is None:
        return 0
    if command.resume is not None:
        summary = resume_run(command.resume, command.runtime, progress=command.progress)
    else:
        assert command.config is not None
        summary = train_run(command.config, progress=command.progress)
    if summary:  # empty in the helper processes of a torchrun
        print(json.dumps(summary, indent=2))
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from glimpse.agents.recipes import load_recipes

    results = Path(args.results)
    print("| recipe | agent | environment | published test error % | paper | what |")
    print("|---|---|---|---|---|---|")
    for recipe in load_recipes().values():
        errors = [
            json.loads((results / run / "test.json").read_text())["test_error"]
            for run in recipe.runs if (results / run / "test.json").is_file()
        ]  # fmt: skip
        published = " / ".join(f"{e:.2f}" for e in errors) if errors else "-"
        print(f"| {recipe.name} | {recipe.agent} | {recipe.env_id} | {published} | "
              f"{recipe.paper or '-'} | {recipe.description} |")  # fmt: skip
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from glimpse.agents.runs import migrate_run

    for run in args.runs:
        changed = migrate_run(Path(run))
        print(f"{run}: {'migrated to format 2' if changed else 'already format 2'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from glimpse.agents.runs import evaluate_run
    from glimpse.envs.evaluation import TargetShare

    out = Path(args.out) if args.out else None
    result = evaluate_run(Path(args.run), args.split, args.samples, args.checkpoint, out,
                          locations=args.locations)  # fmt: skip
    told = "" if args.locations == "learned" else f", {args.locations} locations"
    what = ("missed {error:.2f}% of the balls (caught {caught:.2f}%)", "games") if result["game"] \
        else ("error {error:.2f}%", "images")  # fmt: skip
    print(
        f"{args.run}: {result['split']} "
        + what[0].format(error=result["error"], caught=100 - result["error"])
        + f" (standard error {result['standard_error']:.2f}) on {result['images']:,} {what[1]} "
        f"({result['checkpoint']} checkpoint, {result['samples']} sample(s){told})"
    )
    if "flops_per_step" in result:
        print(f"inference: {result['flops_per_step'] / 1e6:.2f} M FLOPs per step of play")
    if "on_target" in result:
        looking = TargetShare(**result["on_target"])
        soft = result["agent"] == "soft"
        print(looking.describe("attention weight on the target" if soft else
                               "glimpses whose finest patch overlaps the target"))  # fmt: skip
    if out:
        print(f"wrote {out}")
    return 0


def _viz(args: argparse.Namespace) -> int:
    from glimpse.agents.runs import visualise_run

    out = Path(args.out) if args.out else None
    picture, npz = visualise_run(Path(args.run), out, args.n, args.split, args.checkpoint)
    print(f"wrote {picture}" + (f" (trajectories in {npz})" if npz else ""))
    return 0


def _curves(args: argparse.Namespace) -> int:
    from glimpse.agents.runs import curves_table
    from glimpse.agents.visualise import plot_curves

    runs = [Path(run) for run in args.runs]
    print(curves_table(runs, args.every))
    if args.plot:
        plot = Path(args.plot)
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_curves(runs, plot)
        print(f"wrote {plot}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from glimpse.agents.compare import compare
    from glimpse.agents.recipes import recipe

    budget = {k: v for k, v in (("epochs", args.epochs), ("epoch_size", args.epoch_size))
              if v is not None}  # fmt: skip
    if budget and args.seeds is None:
        raise ConfigError(
            "--epochs and --epoch-size retrain the recipes: pass --seeds N with them (without "
            "--seeds, compare reads the published runs and trains nothing)."
        )
    report = compare(
        [recipe(name) for name in args.recipes], Path(args.out), args.seeds, args.runs_dir,
        Path(args.results), progress=args.progress, scaling_sizes=tuple(args.scaling_sizes),
        budget={"train": budget} if budget else None,
    )  # fmt: skip
    print(f"wrote {report}")
    return 0


def _print_error(prog: str, message: str) -> None:
    """``prog: error: message`` on stderr, wrapped to a readable width; a command quoted in
    backticks and a path longer than the width stay on one line, so that they can be copied."""
    unbroken = re.sub(r"`[^`]*`", lambda quoted: quoted[0].replace(" ", "\0"), message)
    text = textwrap.fill(
        f"{prog}: error: {unbroken}", MESSAGE_WIDTH, break_on_hyphens=False,
        break_long_words=False,
    )  # fmt: skip
    print(text.replace("\0", " "), file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are the error and where to get help, not the usage:
    ``glimpse train ram: error: argument --epochs: invalid int value: 'abc'``."""

    def error(self, message: str) -> NoReturn:
        _print_error(self.prog, message)
        print(f"`{self.prog} --help` lists the options.", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after each option, except where the default is ``None``."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from glimpse.tasks import TaskConfig

    formatter = _HelpFormatter
    parser = _Parser(
        prog="glimpse",
        description="Hard visual attention: glimpse environments, RAM and PPO agents, baselines.",
        formatter_class=formatter,
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    data = commands.add_parser("data", help="check and look at the datasets")
    data_commands = data.add_subparsers(
        dest="data_command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    check = data_commands.add_parser(
        "check", help="report which datasets are found and verified", formatter_class=formatter
    )
    check.add_argument("--data-dir", default=None, help="dataset folder (default $GLIMPSE_DATA)")
    check.set_defaults(handler=_data_check)

    show = data_commands.add_parser(
        "show", help="write a labelled grid of canvases to a PNG", formatter_class=formatter
    )
    add_options(show, TaskConfig)
    show.add_argument(
        "--split", default="test", choices=("train", "val", "test"), help="split to draw from"
    )
    show.add_argument("--n", type=int, default=16, help="number of canvases")
    show.add_argument("--columns", type=int, default=4, help="canvases per row")
    show.add_argument("--seed", type=int, default=0, help="seed of the train canvases shown")
    show.add_argument("--out", default="canvases.png", help="PNG file to write")
    show.set_defaults(handler=_data_show)

    train = commands.add_parser(
        "train", help="train an agent or a recipe; writes a run directory", add_help=False,
        description="glimpse train --recipe NAME | glimpse train AGENT --env ID ... "
        "(glimpse train --help)",
    )  # fmt: skip
    train.add_argument("tokens", nargs=argparse.REMAINDER)
    train.set_defaults(handler=_train)

    recipes = commands.add_parser(
        "recipes", help="list the named recipes with their published figures",
        formatter_class=formatter,
    )  # fmt: skip
    recipes.add_argument(
        "--results", default="results", help="folder of the published runs (for their figures)"
    )
    recipes.set_defaults(handler=_recipes)

    migrate = commands.add_parser(
        "migrate", help="bring run folders written by an older glimpse up to date",
        formatter_class=formatter,
        description="Rewrites each run's config.json in the current format, recording every "
        "setting the run actually ran with (settings added since took their old behaviour).",
    )  # fmt: skip
    migrate.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    migrate.set_defaults(handler=_migrate)

    evaluate = commands.add_parser(
        "eval", help="test error of a trained run", formatter_class=formatter
    )
    evaluate.add_argument("run", help="run directory")
    evaluate.add_argument(
        "--split", default="test", choices=("val", "test"), help="fixed split to evaluate on"
    )
    evaluate.add_argument(
        "--samples", type=int, default=1, help="Monte Carlo runs averaged (1: mean locations)"
    )
    evaluate.add_argument(
        "--checkpoint", default="best", choices=("best", "last"), help=CHECKPOINT_HELP
    )
    evaluate.add_argument(
        "--locations", default="learned", choices=("learned", "random", "fixed"),
        help="RAM: where the trained model looks: where it learned to; uniformly at random; or "
        "at step t the mean of its learned step-t locations on the validation split",
    )  # fmt: skip
    evaluate.add_argument(
        "--out", default=None, metavar="FILE",
        help="also write the result as JSON here (the run folder is never changed)",
    )  # fmt: skip
    evaluate.set_defaults(handler=_eval)

    viz = commands.add_parser(
        "viz",
        help="draw glimpse trajectories (or soft attention maps) of a trained run",
        formatter_class=formatter,
    )
    viz.add_argument("run", help="run directory")
    viz.add_argument("--n", type=int, default=16, help="number of images (the split's first)")
    viz.add_argument(
        "--out", default=None,
        help=".gif (animated) or .png (grid); default: trajectories.gif in the run folder",
    )  # fmt: skip
    viz.add_argument(
        "--split", default="test", choices=("val", "test"), help="fixed split to draw from"
    )
    viz.add_argument("--checkpoint", default="best", choices=("best", "last"), help=CHECKPOINT_HELP)
    viz.set_defaults(handler=_viz)

    curves = commands.add_parser(
        "curves",
        help="validation error of runs side by side, epoch by epoch (or by env steps)",
        formatter_class=formatter,
    )
    curves.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    curves.add_argument(
        "--every", type=int, default=10, help="show every N-th epoch (or multiples of N steps)"
    )
    curves.add_argument(
        "--plot", default=None, metavar="FILE", help="also draw the curves (.png, .svg or .pdf)"
    )
    curves.set_defaults(handler=_curves)

    comparison = commands.add_parser(
        "compare",
        help="hard vs soft attention vs CNNs vs FC: a Markdown report with plots",
        formatter_class=formatter,
    )
    comparison.add_argument(
        "recipes", nargs="+", metavar="RECIPE",
        help="recipes of RAM, soft attention, the CNNs and the FC net, on one env id",
    )  # fmt: skip
    comparison.add_argument(
        "--seeds", type=int, default=None,
        help="train (or reuse) seeds 1..N of every recipe in --runs-dir; default: read each "
        "recipe's published runs in --results and train nothing",
    )  # fmt: skip
    comparison.add_argument(
        "--results", default="results", help="folder of the published runs"
    )
    comparison.add_argument(
        "--epochs", type=int, default=None, help="override every recipe's epochs (a quick look)"
    )
    comparison.add_argument(
        "--epoch-size", type=int, default=None, help="override every recipe's episodes per epoch"
    )
    comparison.add_argument("--runs-dir", default="runs", help="where the runs are (re)used")
    comparison.add_argument("--out", default="comparison", help="folder of the report")
    comparison.add_argument(
        "--scaling-sizes", type=int, nargs="+", default=[60, 100, 200, 400],
        help="canvas sides of the cost-scaling study",
    )  # fmt: skip
    comparison.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars"
    )
    comparison.set_defaults(handler=_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # its options depend on the agent: _train parses them
        args = argparse.Namespace(handler=_train, tokens=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except GlimpseError as error:
        _print_error("glimpse", str(error))
        return EXIT_USER_ERROR
    except KeyboardInterrupt as interrupt:
        print(f"glimpse: interrupted. {interrupt}".rstrip(". "), file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`glimpse curves ... | head`): no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's advice
        return 1


if __name__ == "__main__":
    sys.exit(main())
