"""The ``glimpse`` command line.

Options are generated from the config dataclasses (:mod:`glimpse.config`), so ``--help`` shows
the same defaults and texts as the API docs. Errors the user can fix (a missing file, a bad
value) print one paragraph and exit with status 2; see :mod:`glimpse.errors`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from glimpse.config import add_options, from_options, given_options
from glimpse.errors import ConfigError, GlimpseError

EXIT_USER_ERROR = 2
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


def _train(args: argparse.Namespace) -> int:
    from agents.baselines import BaselineConfig
    from agents.ppo import PPOConfig
    from agents.ram import RAMConfig
    from agents.runs import (
        make_run_config,
        model_config,
        read_run_config,
        resume_run,
        train_config,
        train_run,
    )
    from agents.trainer import TrainConfig
    from envs.episodes import EpisodeConfig
    from glimpse.tasks import TaskConfig

    if args.resume:
        # Every option of the config dataclasses is absent unless typed (only_given=True).
        fixed = ("command", "handler", "resume", "progress")
        given = {k: v for k, v in vars(args).items() if k not in fixed and v is not None}
        summary = resume_run(Path(args.resume), given, progress=args.progress)
    else:
        base = read_run_config(Path(args.config)) if args.config else {}
        agent = args.agent or base.get("agent", "ram")
        env_id = args.env or base.get("env_id")
        if env_id is None:
            raise ConfigError("Name the environment: --env Glimpse/MNIST-v0 (or pass --config).")
        env = {
            **base.get("env", {}),
            **given_options(TaskConfig, args),
            **given_options(EpisodeConfig, args),
        }
        typed_model = {
            "ram": given_options(RAMConfig, args),
            "ppo": given_options(PPOConfig, args, prefix="ppo_"),
            "recurrent-ppo": given_options(PPOConfig, args, prefix="ppo_"),
        }.get(agent, given_options(BaselineConfig, args, prefix="baseline_"))
        model = model_config(agent, env_id, env, base.get("model", {}), typed_model)
        train = train_config(base.get("train", {}), given_options(TrainConfig, args))
        config = make_run_config(agent, env_id, env, model, train)
        summary = train_run(config, progress=args.progress)
    if summary:  # empty in the helper processes of a torchrun
        print(json.dumps(summary, indent=2))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from agents.runs import evaluate_run

    result = evaluate_run(Path(args.run), args.split, args.samples, args.checkpoint)
    print(
        f"{args.run}: {result['split']} error {result['error']:.2f}% "
        f"(standard error {result['standard_error']:.2f}) on {result['images']:,} images "
        f"({result['checkpoint']} checkpoint, {result['samples']} sample(s))"
    )
    return 0


def _viz(args: argparse.Namespace) -> int:
    from agents.runs import visualise_run

    npz = visualise_run(Path(args.run), Path(args.out), args.n, args.split, args.checkpoint)
    print(f"wrote {args.out}" + (f" (trajectories in {npz})" if npz else ""))
    return 0


def _curves(args: argparse.Namespace) -> int:
    from agents.runs import curves_table

    print(curves_table([Path(run) for run in args.runs], args.every))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from agents.compare import compare, ram_recipe
    from agents.ram import RAMConfig

    config = Path(args.ram_config) if args.ram_config else None
    ram_model, ram_train = ram_recipe(config, args.ram_epochs, given_options(RAMConfig, args))
    report = compare(
        args.env, args.seeds, args.epochs, Path(args.out), args.runs_dir, args.epoch_size,
        progress=args.progress, scaling_sizes=tuple(args.scaling_sizes), ram_model=ram_model,
        ram_train=ram_train,
    )  # fmt: skip
    print(f"wrote {report}")
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after each option, except where the default is ``None``."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from glimpse.tasks import TaskConfig

    formatter = _HelpFormatter
    parser = argparse.ArgumentParser(
        prog="glimpse",
        description="Hard visual attention: glimpse environments, RAM and PPO agents, baselines.",
        formatter_class=formatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="check and look at the datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
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

    from agents.baselines import BaselineConfig
    from agents.ppo import PPOConfig
    from agents.ram import RAMConfig
    from agents.runs import AGENTS
    from agents.trainer import TrainConfig
    from envs.episodes import EpisodeConfig

    train = commands.add_parser(
        "train",
        help="train an agent; writes a run directory",
        formatter_class=formatter,
        description="Train an agent on a Glimpse environment. Settings come from the "
        "environment id, then --config, then the options typed here.",
    )
    train.add_argument("--agent", choices=AGENTS, default=None, help="agent (default: ram)")
    train.add_argument("--env", default=None, help="environment id, e.g. Glimpse/MNIST-v0")
    train.add_argument("--config", default=None, help="config.json of an earlier run to start from")
    train.add_argument(
        "--resume",
        default=None,
        metavar="RUN",
        help="continue this run directory with its settings (--threads and --device may change)",
    )
    train.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar"
    )
    for cls in (TrainConfig, RAMConfig, EpisodeConfig, TaskConfig):
        add_options(train, cls, only_given=True)
    add_options(train, PPOConfig, prefix="ppo_", only_given=True)
    add_options(train, BaselineConfig, prefix="baseline_", only_given=True)
    train.set_defaults(handler=_train)

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
    evaluate.set_defaults(handler=_eval)

    viz = commands.add_parser(
        "viz",
        help="draw glimpse trajectories (or soft attention maps) of a trained run",
        formatter_class=formatter,
    )
    viz.add_argument("run", help="run directory")
    viz.add_argument("--n", type=int, default=16, help="number of images (the split's first)")
    viz.add_argument("--out", default="trajectories.gif", help=".gif (animated) or .png (grid)")
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
    curves.set_defaults(handler=_curves)

    comparison = commands.add_parser(
        "compare",
        help="hard vs soft attention vs CNN vs FC: a Markdown report with plots",
        formatter_class=formatter,
    )
    comparison.add_argument("--env", required=True, help="environment id")
    comparison.add_argument("--seeds", type=int, default=3, help="seeds per model")
    comparison.add_argument("--epochs", type=int, default=100, help="training epochs per run")
    comparison.add_argument(
        "--ram-config", default=None, metavar="CONFIG",
        help="RAM's recipe (model and training settings) from an earlier run's config.json",
    )  # fmt: skip
    comparison.add_argument(
        "--ram-epochs", type=int, default=None,
        help="RAM's training epochs; default: --ram-config's, else --epochs",
    )  # fmt: skip
    comparison.add_argument("--epoch-size", type=int, default=None, help="episodes per epoch")
    comparison.add_argument("--runs-dir", default="runs", help="where the runs are (re)used")
    comparison.add_argument("--out", default="comparison", help="folder of the report")
    comparison.add_argument(
        "--scaling-sizes", type=int, nargs="+", default=[60, 100, 200, 400],
        help="canvas sides of the cost-scaling study",
    )  # fmt: skip
    comparison.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars"
    )
    add_options(comparison, RAMConfig, only_given=True)  # RAM's model, as for glimpse train
    comparison.set_defaults(handler=_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except GlimpseError as error:
        print(f"glimpse: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as interrupt:
        print(f"glimpse: interrupted. {interrupt}".rstrip(". "), file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`glimpse curves ... | head`): no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's advice
        return 1


if __name__ == "__main__":
    sys.exit(main())
