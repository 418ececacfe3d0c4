"""Hard versus soft attention on one task: ``glimpse compare RECIPE ...``.

Each recipe's runs are its published ones (``runs`` in ``recipes.toml``, found in
``results/``), so the report regenerates from committed runs in minutes without training; with
``--seeds N`` it trains (or reuses, when a run with the same name and settings finished) seeds
``1 .. N`` of every recipe as ``<recipe>-seed<N>`` instead. It writes ``report.md``,
``results.json`` and PNG plots into a folder:

* accuracy and stability: test error per seed, mean ± standard deviation, and the seeds that
  failed (test error over twice the recipe's median); epochs, epochs to the best validation
  error, training time (marked where the runs trained in bfloat16, wholly or partly);
* cost: parameters, inference FLOPs per image (``torch.utils.flop_counter``), pixels read per
  image (RAM: the canvas pixels under its glimpses on test canvases; the others: the whole
  canvas), CPU time and peak memory of the tensors inference creates, per image at batch 1
  and 256 (RAM as deployed, :class:`RAMPredictor`);
* the frontier: test error against FLOPs and against batch-1 time, every recipe and seed;
  RAM recipes that differ only in their glimpse budget (a sweep) are joined by a line and
  get a table of their own, so hard attention has a frontier, not a point;
* where each looks: RAM's share of glimpses whose finest patch overlaps the digit, soft
  attention's share of attention weight on the digit's cells, step by step; and the same RAM
  models looking at random and at a fixed sequence of locations, so that what learning where
  to look is worth is measured;
* scaling: FLOPs and CPU time per image of RAM and soft attention on cluttered canvases of 60,
  100, 200 and 400 pixels (distractors keep their density), at the same glimpse budget.

The recipes are RAM's, PPO's and the full-view baselines' (``soft``, ``deep-cnn``, ``cnn``,
``fc``) on one environment id, any number of each (a glimpse-budget sweep is several RAM
recipes). PPO's policy acts through the environment (it has no in-model episode), so its
times include the environment's steps and its memory counts only its tensors.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glimpse.agents import cost
from glimpse.agents.baselines import BaselineConfig
from glimpse.agents.learners import TOLD_LOCATIONS, RAMLearner
from glimpse.agents.ppo import PPOAgent
from glimpse.agents.ram import RAMConfig
from glimpse.agents.recipes import Recipe
from glimpse.agents.run_directory import metrics_rows, validation_curve
from glimpse.agents.runs import (
    Layer,
    config_differences,
    load_agent,
    migrate_config,
    read_run_config,
    resolve_config,
    train_run,
)
from glimpse.envs.evaluation import TargetShare
from glimpse.errors import ConfigError

COMPARED = ("ram", "ppo", "soft", "deep-cnn", "cnn", "fc")
NAMES = {"ram": "hard: RAM", "ppo": "hard: PPO policy", "soft": "soft attention",
         "deep-cnn": "CNN (6 layers, batch norm)", "cnn": "CNN (2 layers)",
         "fc": "FC (2 layers)"}  # fmt: skip
SCALING_SIZES = (60, 100, 200, 400)
PICTURES = 4
PIXEL_CANVASES = 100  # test canvases on which RAM's pixels read are counted
BATCHES = (1, 256)  # batch sizes of the time and memory per image
TIMING_SECONDS = 0.5  # per model and batch size, timed in turns with the others (at least 3 rounds)


def train_or_reuse(
    recipe: Recipe, seed: int, runs_dir: str, progress: bool, budget: Layer | None = None
) -> Path:
    """The run ``<recipe>-seed<seed>`` in ``runs_dir``: trained now, resumed, or reused when it
    finished. A run found under that name must have been trained with the same settings
    (ignoring thread count, device and folder), or the report would mix recipes without
    saying so. ``budget`` overrides the recipe's ``train`` settings (a quick look)."""
    name = f"{recipe.name}-seed{seed}"
    run = {"run": {"seed": seed, "runs_dir": runs_dir, "name": name}}
    layers = [recipe.layer(), *([budget] if budget else []), run]
    config = resolve_config(recipe.agent, recipe.env_id, layers,
                            recipe=None if budget else recipe.name)  # fmt: skip
    run_dir = Path(runs_dir) / name
    if (run_dir / "config.json").exists():
        found = migrate_config(json.loads((run_dir / "config.json").read_text()))
        differences = config_differences(config, found)
        if differences:
            raise ConfigError(
                f"{run_dir} exists but was trained with other settings than {recipe.name} "
                f"({'; '.join(differences)}). Point --runs-dir at another folder to train "
                "afresh."
            )
    if not (run_dir / "test.json").exists():
        resume = (run_dir / "checkpoints" / "last.pt").exists()
        train_run(config, resume=resume, progress=progress)
    return run_dir


def published_runs(recipe: Recipe, results_dir: Path) -> list[Path]:
    """The recipe's published runs in ``results_dir``, each with its ``test.json``."""
    if not recipe.runs:
        raise ConfigError(
            f"Recipe {recipe.name} has no published runs to compare; pass --seeds N to train "
            "(or reuse) N seeds of every recipe in --runs-dir."
        )
    runs = [results_dir / name for name in recipe.runs]
    missing = [str(run) for run in runs if not (run / "test.json").is_file()]
    if missing:
        raise ConfigError(
            f"Published runs of {recipe.name} are missing or unfinished: {', '.join(missing)}. "
            "Run from the repository root (or pass --results), or train with --seeds N."
        )
    return runs


def _check_recipes(recipes: Sequence[Recipe]) -> str:
    """The one environment id of ``recipes``, which must be of the compared agents."""
    foreign = [r.name for r in recipes if r.agent not in COMPARED]
    env_ids = {r.env_id for r in recipes}
    if not recipes or foreign or len(env_ids) > 1:
        raise ConfigError(
            f"glimpse compare takes recipes of {', '.join(COMPARED)} on one environment id"
            f"{'; not ' + ', '.join(foreign) if foreign else ''}"
            f"{'; these use ' + ', '.join(sorted(env_ids)) if len(env_ids) > 1 else ''}."
        )
    if len({r.name for r in recipes}) < len(recipes):
        raise ConfigError("Name each recipe once.")
    return env_ids.pop()


def _has_checkpoint(run: Path) -> bool:
    """Whether the run kept its best checkpoint (``best.pt``, or PPO's ``best.zip``)."""
    return any((run / "checkpoints" / f"best{suffix}").is_file() for suffix in (".pt", ".zip"))


def _mean_of(summaries: list[dict[str, Any]], key: str) -> float | None:
    """The mean of a ``test.json`` field over the runs, None where a run lacks it."""
    values = [s.get(key) for s in summaries]
    return None if None in values else statistics.mean(values)  # type: ignore[type-var]


def last_fifth_gain(run_dir: Path) -> float:
    """How many points of validation error a run's last fifth of training gained: the best
    error before it minus the best within it (positive: still improving). The comparison
    calls a run converged below 0.1 point.

    Rounded to 1e-9: errors are whole canvases over the split (multiples of 0.02 points on
    5,000), and a gain of exactly 5 canvases is 0.1, not 0.0999... or 0.1000...1 as the
    difference of two binary fractions would have it, and so not under 0.1."""
    _, curve = validation_curve(run_dir)
    errors = [curve[key] for key in sorted(curve)]
    cut = max(1, round(0.8 * len(errors)))
    if cut >= len(errors):
        return float("nan")  # a single validation: no last fifth to judge
    return round(min(errors[:cut]) - min(errors[cut:]), 9)


def trained_precision(runs: list[Path]) -> str:
    """What the runs' training steps computed in: float32, bfloat16, "partly bfloat16" (under
    precision auto, trained or resumed on machines that differ, or seeds whose configs
    differ), or "precision unrecorded" (an auto run whose metrics lack it). A run with an
    explicit precision trained in it; under auto each epoch's ``train_bfloat16`` (the share of
    its steps in bfloat16) says."""
    shares: list[float | None] = []
    for run in runs:
        requested = read_run_config(run).get("model", {}).get("precision", "float32")
        if requested == "auto":
            shares += [row.get("train_bfloat16") for row in metrics_rows(run)]
        else:
            shares.append(1.0 if requested == "bfloat16" else 0.0)
    if None in shares:
        return "precision unrecorded"
    known = [share for share in shares if share is not None]
    if known and min(known) == 1.0:
        return "bfloat16"
    return "partly bfloat16" if any(known) else "float32"


def _failed(errors: list[float]) -> int:
    """Seeds whose test error is over twice the median of the recipe's seeds."""
    median = statistics.median(errors)
    return sum(error > 2 * median for error in errors)


def measure(recipe: Recipe, runs: list[Path]) -> tuple[dict[str, Any], Inference]:
    """One row of the report: the runs' recorded results and what the recipe's model costs,
    and its inference at each of :data:`BATCHES`, for :func:`time_rows` to time beside the
    other rows'.

    Costs are the recipe's model's (untrained: FLOPs and time do not depend on the weights);
    where each looks and the told-location errors come from the runs with a checkpoint."""
    summaries = [json.loads((run / "test.json").read_text()) for run in runs]
    config = read_run_config(runs[0])
    errors = [float(s["test_error"]) for s in summaries]
    with_checkpoint = [run for run in runs if _has_checkpoint(run)]
    row: dict[str, Any] = {
        "recipe": recipe.name,
        "agent": recipe.agent,
        "glimpses": config["env"].get("glimpses"),  # soft attention: its steps
        "budget_family": budget_family(recipe),
        "runs": [run.name for run in runs],
        "errors": errors,
        "error_mean": statistics.mean(errors),
        "error_std": statistics.stdev(errors) if len(errors) > 1 else None,
        "failed_seeds": _failed(errors),
        "epochs": _mean_of(summaries, "epochs"),  # PPO counts steps instead
        "best_epoch": _mean_of(summaries, "best_epoch"),
        "steps": _mean_of(summaries, "steps"),
        "train_minutes": statistics.mean(s["train_seconds"] for s in summaries) / 60,
        "train_precision": trained_precision(runs),
        "last_fifth_gain": [last_fifth_gain(run) for run in runs],
        "on_target": None,
        "told": {},
        "told_on_target": {},
    }
    by_agent = {"ram": _measure_ram, "ppo": _measure_ppo}
    inference, shares = by_agent.get(recipe.agent, _measure_full_view)(
        recipe, config, with_checkpoint, row
    )
    for b, run in inference.items():
        row[f"kb_batch{b}"] = cost.peak_memory_bytes(run) / b / 1000
    if shares:
        steps = len(shares[0].per_step)
        row["on_target"] = {
            "per_step": [statistics.mean(s.per_step[t] for s in shares) for t in range(steps)],
            "last": statistics.mean(s.last for s in shares),
            "overall": statistics.mean(s.overall for s in shares),
            "runs": len(shares),
        }
    return row, inference


Inference = dict[int, Callable[[], object]]  # batch size -> one inference on that many canvases


def time_rows(rows: list[dict[str, Any]], inferences: list[Inference]) -> None:
    """Each row's CPU ms per image at each of :data:`BATCHES` (``ms_batch1``, ...), every
    row's model timed in turn, round after round (:func:`cost.latency_ms`)."""
    for b in BATCHES:
        runs = {i: inference[b] for i, inference in enumerate(inferences)}
        for i, ms in cost.latency_ms(runs, b, TIMING_SECONDS * len(runs)).items():
            rows[i][f"ms_batch{b}"] = ms


def _measure_ram(
    recipe: Recipe, config: dict[str, Any], trained: list[Path], row: dict[str, Any]
) -> tuple[Inference, list[TargetShare]]:
    """RAM as deployed (:class:`RAMPredictor`): its cost from the recipe's model; from each
    trained run, where it looks, the pixels it reads, and its errors when told where to look."""
    settings, ram_config = config["env"], RAMConfig(**config["model"])
    predictor, _ = cost.ram_predictor(settings, ram_config)
    row["params"] = sum(p.numel() for p in predictor.model.parameters())
    row["flops"] = cost.ram_flops(settings, ram_config)
    shares, pixels = [], []
    told: dict[str, list[float]] = {how: [] for how in TOLD_LOCATIONS}
    told_on_target: dict[str, list[float]] = {how: [] for how in TOLD_LOCATIONS}
    for run in trained:
        learner = load_agent(run)
        assert isinstance(learner, RAMLearner)
        sensor, canvas = learner.train_episodes.sensor, learner.task.canvas_shape[1:]
        evaluation = learner.evaluate("test")[0]
        shares.append(evaluation.target_share(sensor, *canvas))
        pixels.append(cost.pixels_read(evaluation.locations[:PIXEL_CANVASES], sensor, canvas[0]))
        for how in TOLD_LOCATIONS:
            told_evaluation = learner.evaluate_locations("test", how)
            told[how].append(told_evaluation.error_percent)
            told_on_target[how].append(told_evaluation.target_share(sensor, *canvas).overall)
    row["pixels"] = statistics.mean(pixels) if pixels else None
    row["told"] = told if trained else {}
    row["told_on_target"] = told_on_target if trained else {}
    return {b: cost.ram_inference(settings, b, ram_config) for b in BATCHES}, shares


def _measure_ppo(
    recipe: Recipe, config: dict[str, Any], trained: list[Path], row: dict[str, Any]
) -> tuple[Inference, list[TargetShare]]:
    """A PPO policy, which acts through the environment (it has no in-model episode): its
    cost, pixels and looking measured on the trained runs."""
    agents = [load_agent(run) for run in trained]
    if not agents:
        raise ConfigError(f"The runs of {recipe.name} have no checkpoint to measure.")
    first = agents[0]
    assert isinstance(first, PPOAgent)
    settings, policy = config["env"], first.policy()
    row["params"] = sum(p.numel() for p in first.model.policy.parameters())
    row["flops"] = cost.count_flops(cost.policy_inference(policy, settings, 1)[0])
    record, episodes = cost.policy_inference(policy, settings, PIXEL_CANVASES)
    row["pixels"] = cost.pixels_read(record().locations, episodes.sensor,
                                     episodes.task.canvas_size)  # fmt: skip
    shares = [share for agent in agents if (share := agent.looking("test")) is not None]
    return {b: cost.policy_inference(policy, settings, b)[0] for b in BATCHES}, shares


def _measure_full_view(
    recipe: Recipe, config: dict[str, Any], trained: list[Path], row: dict[str, Any]
) -> tuple[Inference, list[TargetShare]]:
    """A full-view baseline: its cost from the recipe's model; soft attention's looking from
    the trained runs."""
    settings, model_config = config["env"], BaselineConfig(**config["model"])
    task, model = cost.baseline_model(recipe.agent, settings, model_config)
    row["params"] = sum(p.numel() for p in model.parameters())
    row["flops"] = cost.baseline_flops(recipe.agent, settings, model_config)
    row["pixels"] = float(np.prod(task.canvas_shape[1:]))
    shares = [share for run in trained if (share := load_agent(run).looking("test")) is not None]
    inference = {b: cost.baseline_inference(recipe.agent, settings, b, model_config)
                 for b in BATCHES}  # fmt: skip
    return inference, shares


def scaling(settings: dict[str, Any], sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    """FLOPs and CPU ms per image (batch 64, the two timed in turn) of RAM and soft attention
    as the canvas grows."""
    rows = []
    for size in sizes:
        scaled = {**settings, "task": "cluttered", "size": size, "distractors": None}
        runs = {"ram": cost.ram_inference(scaled, 64),
                "soft": cost.baseline_inference("soft", scaled, 64)}  # fmt: skip
        ms = cost.latency_ms(runs, 64, TIMING_SECONDS * len(runs))
        rows.append({
            "size": size,
            "ram_flops": cost.ram_flops(scaled),
            "soft_flops": cost.baseline_flops("soft", scaled),
            "ram_ms": ms["ram"],
            "soft_ms": ms["soft"],
        })  # fmt: skip
    return rows


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scaling(rows: list[dict[str, Any]], out: Path) -> None:
    plt = _pyplot()
    sizes = [r["size"] for r in rows]
    figure, (flops, ms) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, label in ((flops, "flops", "inference FLOPs per image"),
                             (ms, "ms", "CPU ms per image (batch 64)")):  # fmt: skip
        axis.plot(sizes, [r[f"ram_{key}"] for r in rows], "o-", label="hard (RAM)")
        axis.plot(sizes, [r[f"soft_{key}"] for r in rows], "s-", label="soft attention")
        axis.set_xlabel("canvas side (pixels)")
        axis.set_ylabel(label)
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)


def budget_family(recipe: Recipe) -> str | None:
    """What a RAM recipe is with its glimpse budget left out (agent, environment id and
    settings): recipes of one family differ only in their glimpses. None for other agents."""
    if recipe.agent != "ram":
        return None
    settings = {section: {key: value for key, value in values.items()
                          if (section, key) != ("env", "glimpses")}
                for section, values in recipe.settings.items()}  # fmt: skip
    kept = {section: values for section, values in settings.items() if values}
    return json.dumps([recipe.agent, recipe.env_id, kept], sort_keys=True)


def budget_sweeps(rows: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The RAM rows of one :func:`budget_family`, grouped, each group in order of glimpses:
    hard attention's frontier. Groups of one budget are left out."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["budget_family"] is not None:
            groups.setdefault(row["budget_family"], []).append(row)
    return [sorted(group, key=lambda row: row["glimpses"]) for group in groups.values()
            if len({row["glimpses"] for row in group}) > 1]  # fmt: skip


def _tick_label(value: float, _position: object = None) -> str:
    """A log axis's tick as 2, 0.5, 30 k or 4 M; minor ticks only at 2 and 5 x 10^n."""
    if value <= 0:
        return ""
    leading = value / 10 ** np.floor(np.log10(value) + 1e-9)
    if round(leading) not in (1, 2, 5) or abs(leading - round(leading)) > 1e-6:
        return ""
    for unit, suffix in ((1e6, " M"), (1e3, " k")):
        if value >= unit:
            return f"{value / unit:g}{suffix}"
    return f"{value:g}"


def plot_frontier(rows: list[dict[str, Any]], env_id: str, out: Path) -> None:
    """Test error against FLOPs per image and against batch-1 CPU time: every seed a dot,
    each recipe's mean a marker with its name, each glimpse-budget sweep a line through its
    recipes' means."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    sweeps = budget_sweeps(rows)
    legend_rows = (len(rows) + len(sweeps) + 1) // 2
    legend_inches = 0.2 * legend_rows + 0.1  # under the plots, two columns
    height = 4.6 + legend_inches
    figure, axes = plt.subplots(1, 2, figsize=(12, height))
    markers = {"ram": "o", "ppo": "P", "soft": "s", "deep-cnn": "D", "cnn": "^", "fc": "v"}
    for axis, key, label in ((axes[0], "flops", "inference FLOPs per image"),
                             (axes[1], "ms_batch1", "CPU ms per image, batch 1")):  # fmt: skip
        for sweep in sweeps:
            budgets = ", ".join(str(row["glimpses"]) for row in sweep)
            axis.plot([row[key] for row in sweep], [row["error_mean"] for row in sweep], "--",
                      color="0.4", linewidth=1, label=f"RAM with {budgets} glimpses")  # fmt: skip
        for index, row in enumerate(rows):
            colour = f"C{index % 10}"
            x = row[key]
            axis.scatter([x] * len(row["errors"]), row["errors"], s=14, alpha=0.5, color=colour)
            axis.scatter([x], [row["error_mean"]], s=70, marker=markers[row["agent"]],
                         color=colour, label=f"{NAMES[row['agent']]}: {row['recipe']}")  # fmt: skip
        axis.set_xscale("log")
        axis.set_yscale("log")  # errors from about 1% to over 50%
        for ticks in (axis.xaxis, axis.yaxis):
            ticks.set_major_formatter(FuncFormatter(_tick_label))
            ticks.set_minor_formatter(FuncFormatter(_tick_label))
        axis.set_xlabel(label)
        axis.set_ylabel("test error (%, log scale)")
        axis.grid(alpha=0.3, which="both")
    axes[0].set_title(f"{env_id}: accuracy against compute")
    axes[1].set_title("accuracy against latency")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0.0, legend_inches / height, 1.0, 1.0))
    figure.savefig(out, dpi=120)
    plt.close(figure)


PICTURE_FILES = {"ram": "hard-trajectories.png", "soft": "soft-attention.png"}


def draw_pictures(
    recipes: Sequence[Recipe], runs: dict[str, list[Path]], out_dir: Path
) -> dict[str, Path]:
    """RAM's glimpses step by step and soft attention's weights at each step on the same first
    test canvases, from the first run with a checkpoint of the first recipe of each agent;
    a report without one of the two agents draws the other. Returns the PNGs by agent."""
    from glimpse.agents.runs import visualise_run

    pictures = {}
    for agent, name in PICTURE_FILES.items():
        run = next((run for r in recipes if r.agent == agent for run in runs[r.name]
                    if _has_checkpoint(run)), None)  # fmt: skip
        if run is not None:
            pictures[agent] = out_dir / name
            visualise_run(run, pictures[agent], PICTURES)
    return pictures


def compare(
    recipes: Sequence[Recipe],
    out_dir: Path,
    seeds: int | None = None,
    runs_dir: str = "runs",
    results_dir: Path = Path("results"),
    progress: bool = True,
    scaling_sizes: tuple[int, ...] = SCALING_SIZES,
    budget: Layer | None = None,
) -> Path:
    """Measures the recipes' runs and writes ``out_dir/report.md``; returns its path.

    ``seeds`` None: each recipe's published runs in ``results_dir``, nothing trained; a number:
    seeds ``1 .. seeds`` of each recipe trained or reused in ``runs_dir`` (:func:`train_or_reuse`).
    """
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds {seeds} must be at least 1.")
    if min(scaling_sizes, default=1) < 1:
        raise ConfigError(f"--scaling-sizes {min(scaling_sizes)}: canvas sides are at least 1.")
    env_id = _check_recipes(recipes)
    runs: dict[str, list[Path]] = {}
    if seeds is None:
        runs = {r.name: published_runs(r, results_dir) for r in recipes}  # all found, or refused
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, inferences = [], []
    for recipe in recipes:
        if seeds is not None:
            runs[recipe.name] = [train_or_reuse(recipe, seed, runs_dir, progress, budget)
                                 for seed in range(1, seeds + 1)]  # fmt: skip
        row, inference = measure(recipe, runs[recipe.name])
        rows.append(row)
        inferences.append(inference)
    time_rows(rows, inferences)
    plot_frontier(rows, env_id, out_dir / "frontier.png")
    settings = read_run_config(runs[recipes[0].name][0])["env"]
    scaled = scaling(settings, scaling_sizes)
    plot_scaling(scaled, out_dir / "scaling.png")
    pictures = draw_pictures(recipes, runs, out_dir)
    report = out_dir / "report.md"
    report.write_text(render_report(env_id, rows, scaled, pictures))
    (out_dir / "results.json").write_text(json.dumps({"rows": rows, "scaling": scaled}, indent=2))
    return report


def _threads(count: int) -> str:
    return f"{count} thread" if count == 1 else f"{count} threads"


def _error(row: dict[str, Any]) -> str:
    if row["error_std"] is None:
        return f"{row['error_mean']:.2f}"
    return f"{row['error_mean']:.2f} ± {row['error_std']:.2f}"


def _gains(row: dict[str, Any]) -> str:
    """The seeds' last-fifth gains, with "converged" when every one is under 0.1 point."""
    gains = row["last_fifth_gain"]
    text = ", ".join("-" if np.isnan(g) else f"{g:.2f}" for g in gains)
    return f"{text} (converged)" if all(g < 0.1 for g in gains) else text


def _mean(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def render_report(
    env_id: str,
    rows: list[dict[str, Any]],
    scaled: list[dict[str, Any]],
    pictures: dict[str, Path],
) -> str:
    import datetime

    from glimpse.agents.bptt import cpu_name

    lines = [
        f"# Hard versus soft attention on {env_id}",
        "",
        "Test error on the fixed 10,000 test canvases at each run's best validation epoch; "
        "a seed *failed* if its error is over twice its recipe's median; *last fifth's gain*: "
        "the points of validation error the last fifth of training gained (converged: under "
        "0.1 on every seed); *training min*: minutes of training per seed, on whichever "
        "machine trained it, marked where its steps computed in bfloat16 (wholly or partly). "
        "FLOPs counted by "
        "torch.utils.flop_counter; peak KB: the most memory held at once by the tensors "
        "inference creates (activations, tables; not the weights), per image; CPU ms per "
        "image on this machine "
        f"({cpu_name()}, {_threads(torch.get_num_threads())}, {datetime.date.today()}), "
        "canvases in memory, RAM as deployed "
        "(RAMPredictor: the sensor, the glimpses and the networks, no environment).",
        "",
        "## Accuracy and stability",
        "",
        "| model | recipe | seeds | test error % | per seed | failed seeds | epochs "
        "| epochs to best | last fifth's gain | training min |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_seed = ", ".join(f"{e:.2f}" for e in r["errors"])
        epochs = (f"{r['epochs']:.0f}" if r["epochs"] is not None else
                  f"{r['steps'] / 1e6:.0f} M steps" if r["steps"] is not None else "-")  # fmt: skip
        best = "-" if r["best_epoch"] is None else f"{r['best_epoch']:.0f}"
        arithmetic = "" if r["train_precision"] == "float32" else f" ({r['train_precision']})"
        lines.append(
            f"| {NAMES[r['agent']]} | `{r['recipe']}` | {len(r['errors'])} | {_error(r)} | "
            f"{per_seed} | {r['failed_seeds']} | {epochs} | {best} | {_gains(r)} | "
            f"{r['train_minutes']:.0f}{arithmetic} |"
        )
    lines += [
        "",
        "## Cost per image",
        "",
        "| model | recipe | parameters | FLOPs | pixels read | ms (batch 1) | ms (batch 256) "
        "| peak KB (batch 1) | peak KB (batch 256) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pixels = "-" if r["pixels"] is None else f"{r['pixels']:,.0f}"
        lines.append(
            f"| {NAMES[r['agent']]} | `{r['recipe']}` | {r['params']:,} | {r['flops']:,} | "
            f"{pixels} | {r['ms_batch1']:.2f} | {r['ms_batch256']:.3f} | {r['kb_batch1']:,.0f} "
            f"| {r['kb_batch256']:,.1f} |"
        )
    lines += ["", "![frontier](frontier.png)", ""]
    sweeps = budget_sweeps(rows)
    if sweeps:
        lines += ["## Hard attention's glimpse budget", "",
                  "The same RAM recipe with fewer glimpses (the paper's tables have 4, 6 and 8): "
                  "test error against what the episode costs. On target: the share of "
                  "glimpses whose finest patch overlaps the digit.", "",
                  "| glimpses | recipe | seeds | test error % | FLOPs | pixels read "
                  "| ms (batch 1) | on target % |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for sweep in sweeps:
            for r in sweep:
                pixels = "-" if r["pixels"] is None else f"{r['pixels']:,.0f}"
                looked = "-" if r["on_target"] is None else f"{r['on_target']['overall']:.1f}"
                lines.append(
                    f"| {r['glimpses']} | `{r['recipe']}` | {len(r['errors'])} | {_error(r)} | "
                    f"{r['flops']:,} | {pixels} | {r['ms_batch1']:.2f} | {looked} |"
                )
        lines.append("")
    lines += ["## Where each looks", "",
              "RAM: the share of glimpses whose finest patch overlaps the digit (the target "
              "box, the digit's ink on the canvas), with its learned, mean locations. Soft "
              "attention: the share of its attention weight on the feature cells over the "
              "digit. Mean over the seeds with a checkpoint, in percent.", "",
              "| model | recipe | overall | last step | by step |",
              "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        looking = r["on_target"]
        if looking is None:
            continue
        steps = " ".join(f"{share:.0f}" for share in looking["per_step"])
        lines.append(
            f"| {NAMES[r['agent']]} | `{r['recipe']}` | {looking['overall']:.1f} | "
            f"{looking['last']:.1f} | {steps} |"
        )
        for how, shares in r["told_on_target"].items():
            lines.append(f"| the same, {how} locations | `{r['recipe']}` | "
                         f"{statistics.mean(shares):.1f} | | |")  # fmt: skip
    told_rows = [r for r in rows if r["told"]]
    if told_rows:
        lines += ["", "## What learning where to look is worth", "",
                  "The same trained RAM models, answering from glimpses taken where they are "
                  "told: uniformly at random (compare the paper's random-glimpses row, which "
                  "trained with them), or at step t "
                  "the mean of their own learned step-t locations on the validation canvases "
                  "(`glimpse eval RUN --locations random|fixed`). Test error %.", "",
                  "| recipe | learned locations | random locations | fixed sequence |",
                  "|---|---|---|---|"]  # fmt: skip
        for r in told_rows:
            lines.append(
                f"| `{r['recipe']}` | {_error(r)} | {_mean(r['told']['random'])} | "
                f"{_mean(r['told']['fixed'])} |"
            )
    lines += [
        "",
        "## Cost against canvas size (cluttered, same glimpse budget)",
        "",
        "| canvas | RAM FLOPs | soft FLOPs | soft / RAM | RAM ms / image (batch 64) "
        "| soft ms / image (batch 64) |",
        "|---|---|---|---|---|---|",
    ]
    for r in scaled:
        lines.append(
            f"| {r['size']} | {r['ram_flops']:,} | {r['soft_flops']:,} | "
            f"{r['soft_flops'] / r['ram_flops']:.1f} | {r['ram_ms']:.3f} | {r['soft_ms']:.3f} |"
        )
    lines += ["", "![scaling](scaling.png)", ""]
    if pictures:
        captions = {"ram": "Hard attention, its glimpses step by step: ![hard]",
                    "soft": "Soft attention, its weights at each step: ![soft]"}  # fmt: skip
        lines += ["## What each looks at (the same test canvases)", ""]
        for agent, png in pictures.items():
            lines += [f"{captions[agent]}({png.name})", ""]
    return "\n".join(lines)
