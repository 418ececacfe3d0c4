"""The published runs: their tables, their index, and a check that each still evaluates to
its figure. Every published run is a recipe's (``agents/recipes.toml``, ``runs = [...]``).

    python benchmarks/published.py table                 # the results tables (RAM, PPO)
    python benchmarks/published.py table --write README.md docs/ram.md docs/ppo.md
    python benchmarks/published.py index                 # writes results/README.md
    python benchmarks/published.py check [RECIPE ...]    # glimpse eval of every published run
    python benchmarks/published.py publish --source runs/mnist-6-ram-seed4

``results/<run>/`` keeps what the tables need and what ``glimpse eval`` and ``glimpse viz``
need to work without training: ``config.json``, ``metrics.jsonl``, ``test.json`` and
``checkpoints/best.pt`` or ``best.zip`` (weights only, about 1 MB). A checkpoint over 4 MiB
(the FC baseline at 100 x 100 has 2.6 million parameters) stays out: its recipe remakes it.
Runs that back no published figure live in ``results/experiments/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from collections.abc import Iterable
from pathlib import Path

from glimpse.agents.baselines import BASELINES
from glimpse.agents.compare import NAMES
from glimpse.agents.cost import recipe_flops
from glimpse.agents.recipes import Recipe, load_recipes
from glimpse.agents.runs import env_id_settings, resolve_config

RESULTS = Path(__file__).resolve().parents[1] / "results"
MAX_CHECKPOINT_BYTES = 4 * 2**20  # larger checkpoints stay out of the repository
RAM_REFERENCE = ("mnist-6-ram", "cluttered-60-ram")  # RAM rows shown in the PPO table


def summaries(recipe: Recipe) -> list[dict]:
    """``test.json`` of each published run of ``recipe`` that is in results/."""
    return [json.loads((RESULTS / run / "test.json").read_text()) for run in recipe.runs
            if (RESULTS / run / "test.json").is_file()]  # fmt: skip


def over_seeds(errors: list[float]) -> str:
    if len(errors) < 2:
        return f"**{errors[0]:.2f}**" if errors else "not trained yet"
    values = " / ".join(f"{error:.2f}" for error in errors)
    spread = f"{statistics.mean(errors):.2f} ± {statistics.stdev(errors):.2f}"
    return f"**{errors[0]:.2f}** (seeds 1 to {len(errors)}: {values}; mean {spread})"


def ram_table() -> str:
    """The paper's rows: RAM recipes that name the paper's figure and have published runs, each
    with its inference FLOPs per image and, where one is published on the same task, the most
    accurate full-view model's error and FLOPs."""
    lines = ["| task | our test error % | the paper | FLOPs per image | best full view: test "
             "error %, FLOPs | epochs | seed 1's training time (1 thread) | recipe |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    recipes = load_recipes()
    for recipe in recipes.values():
        runs = summaries(recipe)
        if recipe.agent != "ram" or not recipe.paper or not runs:
            continue
        errors = [s["test_error"] for s in runs]
        epochs, minutes = str(runs[0]["epochs"]), f"{runs[0]['train_seconds'] / 60:.0f} min"
        full_view = best_full_view(recipe, recipes.values())
        lines.append(f"| {recipe.description} | {over_seeds(errors)} | {recipe.paper} "
                     f"| {millions(flops_of(recipe))} | {full_view} | {epochs} | {minutes} "
                     f"| `glimpse train --recipe {recipe.name}` |")  # fmt: skip
    return "\n".join(lines)


def flops_of(recipe: Recipe) -> int:
    """Inference FLOPs per image of the model ``recipe`` trains."""
    config = resolve_config(recipe.agent, recipe.env_id, [recipe.layer()], recipe.name)
    return recipe_flops(recipe.agent, config)


def millions(flops: float) -> str:
    return f"{flops / 1e6:.1f} M"


def best_full_view(ram: Recipe, recipes: Iterable[Recipe]) -> str:
    """The full-view recipe with published runs on ``ram``'s environment and the lowest mean
    test error: ``name: mean ± std (seeds), FLOPs``; ``-`` where none is published."""
    candidates = []
    for recipe in recipes:
        errors = [s["test_error"] for s in summaries(recipe)]
        if recipe.agent in BASELINES and recipe.env_id == ram.env_id and errors:
            candidates.append((statistics.mean(errors), recipe, errors))
    if not candidates:
        return "-"
    mean, recipe, errors = min(candidates, key=lambda candidate: candidate[0])
    spread = f" ± {statistics.stdev(errors):.2f}" if len(errors) > 1 else ""
    seeds = f"{len(errors)} seed{'s' if len(errors) > 1 else ''}"
    return (f"{NAMES[recipe.agent]}: {mean:.2f}{spread} ({seeds}), "
            f"{millions(flops_of(recipe))}")  # fmt: skip


def ppo_table() -> str:
    """PPO recipes, and the RAM rows of the same tasks: test accuracy against env steps (an
    env step is one glimpse, so a RAM epoch costs its images times its glimpses)."""
    lines = ["| task | agent | reward | test accuracy % | env steps | training time | recipe |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    recipes = load_recipes()
    chosen = [r for r in recipes.values()  # classifiers (a game's table: catch_table.py)
              if r.agent in ("ppo", "recurrent-ppo")
              and env_id_settings(r.env_id).get("task") != "catch"]  # fmt: skip
    for recipe in [*chosen, *(recipes[name] for name in RAM_REFERENCE)]:
        for run in recipe.runs:
            if not (RESULTS / run / "test.json").is_file():
                continue
            summary = json.loads((RESULTS / run / "test.json").read_text())
            config = json.loads((RESULTS / run / "config.json").read_text())
            steps = summary.get("steps") or _ram_env_steps(RESULTS / run, config)
            step_reward = config["env"]["step_reward"]
            reward = f"final + per step {step_reward:g}" if step_reward else "final only"
            agent, model = config["agent"], config["model"]
            if model.get("advantage") == "factored":
                details = ["factored advantage"]
                if model["minibatches"] == "episodes":
                    details.append("episode minibatches")
                if model["move_credit"] == "expected":
                    details.append("expected move credit")
                agent += f" ({', '.join(details)})"
            seed = config["run"]["seed"]
            command = f"glimpse train --recipe {recipe.name}" + (f" --seed {seed}" if seed != 1
                                                                  else "")  # fmt: skip
            lines.append(f"| {recipe.description} | {agent} | {reward} | "
                         f"**{100 - summary['test_error']:.2f}** | {steps:,} | "
                         f"{summary['train_seconds'] / 60:.0f} min | `{command}` |")  # fmt: skip
    return "\n".join(lines)


def _ram_env_steps(run: Path, config: dict) -> int:
    """Glimpses taken in training up to the last epoch (``images`` in metrics.jsonl)."""
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    return int(last["images"]) * int(config["env"]["glimpses"])


def index() -> str:
    """results/README.md: every published run, from its recipe to its figure."""
    lines = [
        "# Published runs",
        "",
        "Every run here backs a published figure and is a recipe's (`glimpse recipes`; the "
        "recipes are in `agents/recipes.toml`). Retrain one with `glimpse train --recipe RECIPE "
        "--seed N`; check its figure with `glimpse eval results/RUN` (all of them: `python "
        "benchmarks/published.py check`). Runs behind no published figure (ablations, superseded "
        "and unfinished runs) are in `experiments/`; the experiment log describes them.",
        "",
        "Written by `python benchmarks/published.py index`.",
        "",
        "| recipe | agent | environment | run | checkpoint | test error % |",
        "|---|---|---|---|---|---|",
    ]
    for recipe in load_recipes().values():
        for run in recipe.runs:
            folder = RESULTS / run
            best = next((p for p in sorted((folder / "checkpoints").glob("best.*"))), None)
            checkpoint = f"`{best.relative_to(RESULTS)}`" if best else "over 4 MiB: not kept"
            error = (f"{json.loads((folder / 'test.json').read_text())['test_error']:.2f}"
                     if (folder / "test.json").is_file() else "-")  # fmt: skip
            lines.append(f"| {recipe.name} | {recipe.agent} | {recipe.env_id} | `{run}` | "
                         f"{checkpoint} | {error} |")  # fmt: skip
    lines += ["", "## Comparison reports", "",
              "`glimpse compare` reports, regenerated from the runs above without training (their "
              "commands are in `docs/comparison.md`):", "",
              "| report | environment |", "|---|---|"]  # fmt: skip
    recipes = load_recipes()
    for report in sorted(RESULTS.glob("*/report.md")):
        first = json.loads((report.parent / "results.json").read_text())["rows"][0]["recipe"]
        name = report.relative_to(RESULTS)
        lines.append(f"| [`{name}`]({name}) | {recipes[first].env_id} |")
    return "\n".join(lines) + "\n"


def check(names: list[str]) -> str:
    """``glimpse eval`` of every published run (of ``names``, or all) against its test.json."""
    from glimpse.agents.runs import evaluate_run

    lines = ["| run | test.json % | glimpse eval % | difference | seconds |",
             "|---|---|---|---|---|"]  # fmt: skip
    for recipe in load_recipes().values():
        if names and recipe.name not in names:
            continue
        for run in recipe.runs:
            folder = RESULTS / run
            if not (folder / "checkpoints").is_dir() or not any(
                    (folder / "checkpoints").glob("best.*")):  # fmt: skip
                lines.append(f"| {run} | - | no checkpoint kept | - | - |")
                continue
            recorded = json.loads((folder / "test.json").read_text())["test_error"]
            start = time.perf_counter()
            measured = evaluate_run(folder)["error"]
            seconds = time.perf_counter() - start
            lines.append(f"| {run} | {recorded:.2f} | {measured:.2f} | {measured - recorded:+.2f} "
                         f"| {seconds:.0f} |")  # fmt: skip
            print(lines[-1], flush=True)
    return "\n".join(lines)


def publish(source: Path, name: str) -> None:
    """The small files of a finished run (``best.pt`` or ``best.zip``) into results/."""
    target = RESULTS / name
    if not (source / "test.json").exists():
        raise SystemExit(f"{source} has no test.json yet: finish training first.")
    if target.resolve() == source.resolve():
        raise SystemExit(f"{source} is already published: pass the run in runs/ to replace it.")
    if target.exists():  # a new run of the row: no stale GIF or eval file of the old one
        shutil.rmtree(target)
        print(f"replacing {target} (the old run stays in git history)")
    (target / "checkpoints").mkdir(parents=True)
    best = next(p for p in (source / "checkpoints").glob("best.*") if p.suffix in (".pt", ".zip"))
    files = ["config.json", "metrics.jsonl", "test.json"]
    if best.stat().st_size <= MAX_CHECKPOINT_BYTES:
        files.append(f"checkpoints/{best.name}")
    else:
        print(f"{best} is {best.stat().st_size / 2**20:.1f} MiB, over the "
              f"{MAX_CHECKPOINT_BYTES // 2**20} MiB kept: published without it")  # fmt: skip
    for file in files:
        shutil.copy2(source / file, target / file)
    config = json.loads((target / "config.json").read_text())
    config["run"].update(runs_dir="results", name=name)
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"published {target}; add {name!r} to its recipe's runs in agents/recipes.toml")


def write_tables(page: Path) -> None:
    """Replaces the tables between a page's results-table and ppo-table markers (each page
    holds one or both)."""
    text, written = page.read_text(), []
    for marker, content in (("results-table", ram_table()), ("ppo-table", ppo_table())):
        start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
        if start in text and end in text:
            before, rest = text.split(start, 1)
            text = f"{before}{start}\n{content}\n{end}{rest.split(end, 1)[1]}"
            written.append(marker)
    if not written:
        raise SystemExit(f"{page} has no <!-- results-table --> or <!-- ppo-table --> markers.")
    page.write_text(text)
    print(f"updated {' and '.join(written)} in {page}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("table", "index", "check", "publish"))
    parser.add_argument("recipes", nargs="*", help="check: only these recipes' runs")
    parser.add_argument(
        "--write", nargs="+", default=None, help="table: pages to update in place (their markers)"
    )
    parser.add_argument("--source", default=None, help="publish: the finished run directory")
    parser.add_argument("--name", default=None, help="publish: name in results/ (default: its)")
    args = parser.parse_args()
    if args.action == "table":
        for page in args.write or []:
            write_tables(Path(page))
        if not args.write:
            print(ram_table() + "\n\n" + ppo_table())
    elif args.action == "index":
        (RESULTS / "README.md").write_text(index())
        print(f"wrote {RESULTS / 'README.md'}")
    elif args.action == "check":
        print(check(args.recipes))
    else:
        if not args.source:
            parser.error("publish needs --source RUN")
        source = Path(args.source)
        publish(source, args.name or source.name)


if __name__ == "__main__":
    main()
