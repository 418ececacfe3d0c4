"""The ``glimpse`` command line.

Options are generated from the config dataclasses (:mod:`glimpse.config`), so ``--help`` shows
the same defaults and texts as the API docs. Errors the user can fix (a missing file, a bad
value) print one paragraph and exit with status 2; see :mod:`glimpse.errors`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from glimpse.config import add_options, from_options
from glimpse.errors import GlimpseError

EXIT_USER_ERROR = 2


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


def build_parser() -> argparse.ArgumentParser:
    from glimpse.tasks import TaskConfig

    formatter = argparse.ArgumentDefaultsHelpFormatter
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
    check.set_defaults(run=_data_check)

    show = data_commands.add_parser(
        "show", help="write a labelled grid of canvases to a PNG", formatter_class=formatter
    )
    add_options(show, TaskConfig)
    show.add_argument("--split", default="test", choices=("train", "val", "test"))
    show.add_argument("--n", type=int, default=16, help="number of canvases")
    show.add_argument("--columns", type=int, default=4, help="canvases per row")
    show.add_argument("--seed", type=int, default=0, help="seed of the train canvases shown")
    show.add_argument("--out", default="canvases.png", help="PNG file to write")
    show.set_defaults(run=_data_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except GlimpseError as error:
        print(f"glimpse: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("glimpse: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
