"""Reproduce the RAM rows of Mnih et al. (2014), Tables 1 and 2, and write the results table.

    python benchmarks/paper.py train mnist-6      # trains into runs/<row>-ram-seed1 (resumable)
    python benchmarks/paper.py train cluttered-100 --threads 1   # two rows side by side
    python benchmarks/paper.py publish mnist-6    # copies its small files into results/
    python benchmarks/paper.py publish-run --source runs/mnist-ppo-seed1   # any finished run
    python benchmarks/paper.py publish-run --source runs/x-seed2 --name translated-60-ram-seed2
    python benchmarks/paper.py table              # the README's table, from results/
    python benchmarks/paper.py table --write README.md

``results/<run>/`` keeps what the table needs and what ``glimpse eval`` and ``glimpse viz``
need to work without training: ``config.json``, ``metrics.jsonl``, ``test.json`` and
``checkpoints/best.pt`` (weights only, about 1 MB). A checkpoint over 4 MiB (the FC baseline
at 100 x 100 has 2.6 million parameters) stays out: the run's command remakes it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"
MAX_CHECKPOINT_BYTES = 4 * 2**20  # larger checkpoints stay out of the repository


@dataclass(frozen=True)
class Row:
    name: str
    task: str
    env_id: str
    options: tuple[str, ...]
    paper_a: str  # test error, % (arXiv v1)
    paper_b: str  # test error, % (conference version)

    @property
    def run_name(self) -> str:
        return self.seed_run_name(1)

    def seed_run_name(self, seed: int) -> str:
        return f"{self.name}-ram-seed{seed}"

    @property
    def command(self) -> str:
        return " ".join(
            ["glimpse train --agent ram --env", self.env_id, *self.options, "--name", self.run_name]
        )


ROWS = [
    Row("mnist-6", "28x28 MNIST, 6 glimpses, 8x8, 1 scale", "Glimpse/MNIST-v0",
        ("--glimpses", "6", "--epochs", "500", "--lr", "3e-4"), "1.29", "1.12"),
    Row("mnist-7", "28x28 MNIST, 7 glimpses, 8x8, 1 scale", "Glimpse/MNIST-v0",
        ("--glimpses", "7", "--epochs", "500", "--lr", "3e-4"), "-", "1.07"),
    Row("translated-60", "60x60 translated, 8 glimpses, 12x12, 3 scales",
        "Glimpse/TranslatedMNIST-v0", ("--location-std", "0.1", "--reinforce-core",
        "--reinforce-weight", "0.03", "--reward", "probability", "--epochs", "500", "--lr",
        "3e-4"), "1.84", "1.20"),
    Row("cluttered-60", "60x60 cluttered (4), 8 glimpses, 12x12, 3 scales",
        "Glimpse/ClutteredMNIST60-v0", ("--location-std", "0.1", "--reinforce-core",
        "--reinforce-weight", "0.03", "--epochs", "500", "--lr", "3e-4"), "5.23", "4.04"),
    Row("cluttered-100", "100x100 cluttered (8), 8 glimpses, 12x12, 4 scales",
        "Glimpse/ClutteredMNIST100-v0", ("--location-std", "0.1", "--reinforce-core",
        "--reinforce-weight", "0.03", "--reward", "probability", "--epochs", "500", "--lr",
        "3e-4"), "10.83",
        "8.11 (unverified)"),
]  # fmt: skip
BY_NAME = {row.name: row for row in ROWS}


def train(row: Row, runs_dir: str, threads: int) -> None:
    """Trains the row's run (or resumes it); ``threads`` 1 lets two rows share 2 cores."""
    from glimpse.cli import main

    run = Path(runs_dir) / row.run_name
    args = ["train", "--agent", "ram", "--env", row.env_id, *row.options,
            "--name", row.run_name, "--runs-dir", runs_dir, "--threads", str(threads)]  # fmt: skip
    if (run / "checkpoints" / "last.pt").exists():
        args = ["train", "--resume", str(run)]
    sys.exit(main(args))


def publish(row: Row, runs_dir: str, source_dir: str | None = None) -> None:
    source = Path(source_dir) if source_dir else Path(runs_dir) / row.run_name
    copy_run(source, RESULTS / row.run_name, row.run_name)


def copy_run(source: Path, target: Path, name: str) -> None:
    """The small files of a finished run (RAM ``best.pt`` or PPO ``best.zip``) into results/."""
    if not (source / "test.json").exists():
        raise SystemExit(f"{source} has no test.json yet: finish training first.")
    if target.resolve() == source.resolve():
        raise SystemExit(f"{source} is already published: pass the run in runs/ to replace it.")
    if target.exists():  # a new run of the row: no stale GIF or eval file of the old one
        shutil.rmtree(target)
        print(f"replacing {target} (the old run stays in git history)")
    (target / "checkpoints").mkdir(parents=True)
    best = (
        "checkpoints/best.pt"
        if (source / "checkpoints/best.pt").exists()
        else "checkpoints/best.zip"
    )
    files = ["config.json", "metrics.jsonl", "test.json", best]
    size = (source / best).stat().st_size
    if size > MAX_CHECKPOINT_BYTES:  # e.g. the FC baseline at 100 px: 2.6 M parameters
        files.remove(best)
        limit = MAX_CHECKPOINT_BYTES // 2**20
        print(
            f"{source / best} is {size / 2**20:.1f} MiB, over the {limit} MiB kept in the "
            f"repository: published without it (the run's command remakes it)"
        )
    for file in files:
        shutil.copy2(source / file, target / file)
    config = json.loads((target / "config.json").read_text())
    config["train"]["runs_dir"] = str(RESULTS.relative_to(RESULTS.parent))
    config["train"]["name"] = name
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"published {target}")


def table() -> str:
    lines = [
        "| task | our test error % | paper, set A | paper, set B | epochs | training time "
        "(2 CPU cores) | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        run = RESULTS / row.run_name
        if (run / "test.json").exists():
            summary = json.loads((run / "test.json").read_text())
            ours = f"**{summary['test_error']:.2f}**{_over_seeds(row)}"
            epochs = str(summary["epochs"])
            minutes = f"{summary['train_seconds'] / 60:.0f} min"
        else:
            ours, epochs, minutes = "not trained yet", "-", "-"
        lines.append(f"| {row.task} | {ours} | {row.paper_a} | {row.paper_b} | {epochs} "
                     f"| {minutes} | `{row.command}` |")  # fmt: skip
    return "\n".join(lines)


def _over_seeds(row: Row) -> str:
    """`` (seeds 1 / 2 / 3: a / b / c, mean m ± sd)`` when results/ holds more seeds of the row
    (the row's command with ``--seed N --name <row>-ram-seedN``); else nothing."""
    errors, recipes = [], []
    for seed in itertools.count(1):
        run = RESULTS / row.seed_run_name(seed)
        if not (run / "test.json").exists():
            break
        errors.append(json.loads((run / "test.json").read_text())["test_error"])
        recipes.append(_recipe(json.loads((run / "config.json").read_text())))
    if any(recipe != recipes[0] for recipe in recipes):
        raise SystemExit(
            f"results/{row.name}-ram-seed* were trained with different settings (beyond seed, "
            f"name and threads): publish only seeds of the row's command, {row.command}."
        )
    if len(errors) < 2:
        return ""
    seeds = " / ".join(str(seed) for seed in range(1, len(errors) + 1))
    values = " / ".join(f"{error:.2f}" for error in errors)
    spread = f"{statistics.mean(errors):.2f} ± {statistics.stdev(errors):.2f}"
    return f" (seeds {seeds}: {values}; mean {spread})"


def _recipe(config: dict) -> dict:
    """A run's settings, with the defaults of settings added since it was saved, without those
    that do not change what it learns."""
    from agents.runs import resolved_config

    config = resolved_config(config)
    train = {k: v for k, v in config["train"].items() if k not in ("seed", "name", "threads")}
    return {**config, "train": train}


PPO_RUNS = [  # (run name, task, command) of the published PPO runs
    ("mnist-ppo-seed1", "28x28 MNIST, 6 glimpses, 8x8",
     "glimpse train --agent ppo --env Glimpse/MNIST-v0 --ppo-total-steps 2000000 "
     "--ppo-learning-rate 1e-3 --ppo-eval-every 200000 --name mnist-ppo-seed1"),
    ("mnist-ppo-10m-seed1", "28x28 MNIST, 6 glimpses, 8x8",
     "glimpse train --agent ppo --env Glimpse/MNIST-v0 --ppo-total-steps 10000000 "
     "--ppo-learning-rate 1e-3 --ppo-eval-every 500000 --name mnist-ppo-10m-seed1"),
    ("mnist-ppo-step-reward-seed1", "28x28 MNIST, 6 glimpses, 8x8",
     "glimpse train --agent ppo --env Glimpse/MNIST-v0 --step-reward 1.0 --ppo-total-steps "
     "2000000 --ppo-learning-rate 1e-3 --ppo-eval-every 200000 --name mnist-ppo-step-reward-seed1"),
    ("mnist-ppo-step-reward-20m-seed1", "28x28 MNIST, 6 glimpses, 8x8",
     "glimpse train --agent ppo --env Glimpse/MNIST-v0 --step-reward 1.0 --ppo-total-steps "
     "20000000 --ppo-learning-rate 1e-3 --ppo-eval-every 1000000 "
     "--name mnist-ppo-step-reward-20m-seed1"),
    ("mnist-ppo-step-reward-linear-20m-seed1", "28x28 MNIST, 6 glimpses, 8x8",
     "glimpse train --agent ppo --env Glimpse/MNIST-v0 --step-reward 1.0 --ppo-total-steps "
     "20000000 --ppo-learning-rate 1e-3 --ppo-lr-schedule linear --ppo-eval-every 1000000 "
     "--name mnist-ppo-step-reward-linear-20m-seed1"),
    ("mnist-ppo-step-reward-head256-20m-seed1", "28x28 MNIST, 6 glimpses, 8x8",
     "glimpse train --agent ppo --env Glimpse/MNIST-v0 --step-reward 1.0 --ppo-total-steps "
     "20000000 --ppo-learning-rate 1e-3 --ppo-lr-schedule linear --ppo-head-units 256 "
     "--ppo-eval-every 1000000 --name mnist-ppo-step-reward-head256-20m-seed1"),
    ("mnist-ppo-2scales-step-reward-linear-20m-seed1", "28x28 MNIST, 6 glimpses, 8x8, 2 scales",
     "glimpse train --agent ppo --env Glimpse/MNIST-v0 --num-scales 2 --step-reward 1.0 "
     "--ppo-total-steps 20000000 --ppo-learning-rate 1e-3 --ppo-lr-schedule linear "
     "--ppo-eval-every 1000000 --name mnist-ppo-2scales-step-reward-linear-20m-seed1"),
    ("mnist-ppo-2scales-concat-step-reward-linear-20m-seed1",
     "28x28 MNIST, 6 glimpses, 8x8, 2 scales",
     "glimpse train --agent ppo --env Glimpse/MNIST-v0 --num-scales 2 --step-reward 1.0 "
     "--ppo-total-steps 20000000 --ppo-learning-rate 1e-3 --ppo-lr-schedule linear "
     "--ppo-eval-every 1000000 --ppo-history-pooling concat "
     "--name mnist-ppo-2scales-concat-step-reward-linear-20m-seed1"),
    ("mnist-ppo-2scales-concat-step-reward-linear-20m-seed2",
     "28x28 MNIST, 6 glimpses, 8x8, 2 scales",
     "glimpse train --agent ppo --env Glimpse/MNIST-v0 --num-scales 2 --step-reward 1.0 "
     "--ppo-total-steps 20000000 --ppo-learning-rate 1e-3 --ppo-lr-schedule linear "
     "--ppo-eval-every 1000000 --ppo-history-pooling concat --seed 2 "
     "--name mnist-ppo-2scales-concat-step-reward-linear-20m-seed2"),
    ("mnist-ppo-2scales-concat-factored-step-reward-linear-20m-seed1",
     "28x28 MNIST, 6 glimpses, 8x8, 2 scales",
     "glimpse train --agent ppo --env Glimpse/MNIST-v0 --num-scales 2 --step-reward 1.0 "
     "--ppo-total-steps 20000000 --ppo-learning-rate 1e-3 --ppo-lr-schedule linear "
     "--ppo-eval-every 1000000 --ppo-history-pooling concat --ppo-advantage factored "
     "--name mnist-ppo-2scales-concat-factored-step-reward-linear-20m-seed1"),
    ("mnist-ppo-2scales-concat-factored-step-reward-linear-20m-seed2",
     "28x28 MNIST, 6 glimpses, 8x8, 2 scales",
     "glimpse train --agent ppo --env Glimpse/MNIST-v0 --num-scales 2 --step-reward 1.0 "
     "--ppo-total-steps 20000000 --ppo-learning-rate 1e-3 --ppo-lr-schedule linear "
     "--ppo-eval-every 1000000 --ppo-history-pooling concat --ppo-advantage factored --seed 2 "
     "--name mnist-ppo-2scales-concat-factored-step-reward-linear-20m-seed2"),
    ("mnist-recurrent-ppo-seed1", "28x28 MNIST, 6 glimpses, 8x8",
     "glimpse train --agent recurrent-ppo --env Glimpse/MNIST-v0 --ppo-total-steps 1000000 "
     "--ppo-learning-rate 1e-3 --ppo-eval-every 250000 --name mnist-recurrent-ppo-seed1"),
    ("mnist-recurrent-ppo-step-reward-seed1", "28x28 MNIST, 6 glimpses, 8x8",
     "glimpse train --agent recurrent-ppo --env Glimpse/MNIST-v0 --step-reward 1.0 "
     "--ppo-total-steps 1000000 --ppo-learning-rate 1e-3 --ppo-eval-every 250000 "
     "--name mnist-recurrent-ppo-step-reward-seed1"),
    ("cluttered60-ppo-step-reward-seed1", "60x60 cluttered (4), 8 glimpses, 12x12, 3 scales",
     "glimpse train --agent ppo --env Glimpse/ClutteredMNIST60-v0 --step-reward 1.0 "
     "--ppo-total-steps 1500000 --ppo-learning-rate 1e-3 --ppo-eval-every 250000 "
     "--name cluttered60-ppo-step-reward-seed1"),
    ("cluttered60-ppo-step-reward-linear-20m-seed1",
     "60x60 cluttered (4), 8 glimpses, 12x12, 3 scales",
     "glimpse train --agent ppo --env Glimpse/ClutteredMNIST60-v0 --step-reward 1.0 "
     "--ppo-total-steps 20000000 --ppo-learning-rate 1e-3 --ppo-lr-schedule linear "
     "--ppo-eval-every 1000000 --name cluttered60-ppo-step-reward-linear-20m-seed1"),
    ("cluttered60-ppo-factored-step-reward-linear-20m-seed1",
     "60x60 cluttered (4), 8 glimpses, 12x12, 3 scales",
     "glimpse train --agent ppo --env Glimpse/ClutteredMNIST60-v0 --step-reward 1.0 "
     "--ppo-total-steps 20000000 --ppo-learning-rate 1e-3 --ppo-lr-schedule linear "
     "--ppo-eval-every 1000000 --ppo-advantage factored "
     "--name cluttered60-ppo-factored-step-reward-linear-20m-seed1"),
    ("cluttered60-ppo-factored-episodes-step-reward-linear-20m-seed1",
     "60x60 cluttered (4), 8 glimpses, 12x12, 3 scales",
     "glimpse train --agent ppo --env Glimpse/ClutteredMNIST60-v0 --step-reward 1.0 "
     "--ppo-total-steps 20000000 --ppo-learning-rate 1e-3 --ppo-lr-schedule linear "
     "--ppo-eval-every 1000000 --ppo-advantage factored --ppo-minibatches episodes "
     "--name cluttered60-ppo-factored-episodes-step-reward-linear-20m-seed1"),
    ("cluttered60-ppo-factored-episodes-expected-step-reward-linear-20m-seed1",
     "60x60 cluttered (4), 8 glimpses, 12x12, 3 scales",
     "glimpse train --agent ppo --env Glimpse/ClutteredMNIST60-v0 --step-reward 1.0 "
     "--ppo-total-steps 20000000 --ppo-learning-rate 1e-3 --ppo-lr-schedule linear "
     "--ppo-eval-every 1000000 --ppo-advantage factored --ppo-minibatches episodes "
     "--ppo-move-credit expected "
     "--name cluttered60-ppo-factored-episodes-expected-step-reward-linear-20m-seed1"),
    ("cluttered60-ppo-factored-episodes-expected-step-reward-linear-20m-seed2",
     "60x60 cluttered (4), 8 glimpses, 12x12, 3 scales",
     "glimpse train --agent ppo --env Glimpse/ClutteredMNIST60-v0 --step-reward 1.0 "
     "--ppo-total-steps 20000000 --ppo-learning-rate 1e-3 --ppo-lr-schedule linear "
     "--ppo-eval-every 1000000 --ppo-advantage factored --ppo-minibatches episodes "
     "--ppo-move-credit expected --seed 2 "
     "--name cluttered60-ppo-factored-episodes-expected-step-reward-linear-20m-seed2"),
    ("cluttered60-recurrent-ppo-step-reward-seed1",
     "60x60 cluttered (4), 8 glimpses, 12x12, 3 scales",
     "glimpse train --agent recurrent-ppo --env Glimpse/ClutteredMNIST60-v0 --step-reward 1.0 "
     "--ppo-total-steps 1000000 --ppo-learning-rate 1e-3 --ppo-eval-every 250000 "
     "--name cluttered60-recurrent-ppo-step-reward-seed1"),
]  # fmt: skip
RAM_REFERENCE = ("mnist-6", "cluttered-60")  # RAM rows shown in the PPO table for comparison


def ppo_table() -> str:
    """PPO runs, and the RAM runs of the same tasks: test accuracy against env steps.

    An env step is one glimpse, so a RAM epoch costs its images times its glimpses. The reward
    column names the environment's optional per-step reward when a run used it.
    """
    lines = ["| task | agent | reward | test accuracy % | env steps | training time | command |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    runs = list(PPO_RUNS)
    runs += [(BY_NAME[r].run_name, BY_NAME[r].task, BY_NAME[r].command) for r in RAM_REFERENCE]
    for name, task, command in runs:
        run = RESULTS / name
        if not (run / "test.json").exists():
            continue
        summary = json.loads((run / "test.json").read_text())
        config = json.loads((run / "config.json").read_text())
        steps = summary.get("steps") or _ram_env_steps(run, config)
        step_reward = config["env"].get("step_reward", 0.0)
        reward = f"final + per step {step_reward:g}" if step_reward else "final only"
        agent = config["agent"]
        if config["model"].get("advantage") == "factored":
            details = ["factored advantage"]
            if config["model"].get("minibatches") == "episodes":
                details.append("episode minibatches")
            if config["model"].get("move_credit") == "expected":
                details.append("expected move credit")
            agent += f" ({', '.join(details)})"
        lines.append(f"| {task} | {agent} | {reward} | "
                     f"**{100 - summary['test_error']:.2f}** | "
                     f"{steps:,} | {summary['train_seconds'] / 60:.0f} min | "
                     f"`{command}` |")  # fmt: skip
    return "\n".join(lines)


def _ram_env_steps(run: Path, config: dict) -> int:
    """Glimpses taken in training up to the last epoch (``images`` in metrics.jsonl)."""
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    return int(last["images"]) * int(config["env"]["glimpses"])


def write_table(readme: Path) -> None:
    """Replaces the table between the README's results-table markers."""
    text = readme.read_text()
    for marker, content in (("results-table", table()), ("ppo-table", ppo_table())):
        start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
        if start not in text or end not in text:
            raise SystemExit(f"{readme} has no {start} ... {end} markers.")
        before, rest = text.split(start, 1)
        text = f"{before}{start}\n{content}\n{end}{rest.split(end, 1)[1]}"
    readme.write_text(text)
    print(f"updated the results tables in {readme}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("train", "publish", "publish-run", "table"))
    parser.add_argument("row", nargs="?", choices=sorted(BY_NAME), help="for train / publish")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--source", default=None, help="publish: run directory (default: by row)")
    parser.add_argument(
        "--name", default=None, help="publish-run: name in results/ (default: the source's)"
    )
    parser.add_argument("--write", default=None, help="table: README file to update in place")
    parser.add_argument("--threads", type=int, default=0, help="train: torch threads (0: all)")
    args = parser.parse_args()
    if args.action == "publish-run":
        source = Path(args.source or "")
        name = args.name or source.name  # e.g. a screen that became a row's seed
        copy_run(source, RESULTS / name, name)
        return
    if args.action == "table":
        if args.write:
            write_table(Path(args.write))
        else:
            print(table())
    elif args.row is None:
        parser.error(f"{args.action} needs a row: {', '.join(BY_NAME)}")
    elif args.action == "train":
        train(BY_NAME[args.row], args.runs_dir, args.threads)
    else:
        publish(BY_NAME[args.row], args.runs_dir, args.source)


if __name__ == "__main__":
    main()
