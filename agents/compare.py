"""Hard versus soft attention on one task: ``glimpse compare RECIPE ... --seeds N``.

Trains (or reuses, when a run with the same name and settings already finished) each recipe
for each seed (runs named ``<recipe>-seed<N>``), then writes ``report.md`` and PNG plots into a
folder:

* test error, mean and standard deviation over seeds; training time and epochs to the best
  validation error;
* parameters; inference FLOPs per image (``torch.utils.flop_counter``); pixels read per image
  (RAM: the canvas pixels under its glimpses, measured on test trajectories; the others: the
  whole canvas); CPU time per image at batch 1 and 256;
* scaling: FLOPs and CPU time per image of RAM and soft attention on cluttered canvases of 60,
  100, 200 and 400 pixels (distractors keep their density), at the same glimpse budget.

The recipes are RAM's and the full-view baselines' (``soft``, ``cnn``, ``fc``) on one
environment id; the published comparisons are recipes too (``glimpse recipes``).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glimpse.agents import cost
from glimpse.agents.baselines import BaselineConfig
from glimpse.agents.recipes import Recipe
from glimpse.agents.runs import (
    Layer,
    config_differences,
    load_agent,
    migrate_config,
    resolve_config,
    train_run,
)
from glimpse.envs.evaluation import evaluation_episodes, record_trajectories
from glimpse.errors import ConfigError

COMPARED = ("ram", "soft", "cnn", "deep-cnn", "fc")
SCALING_SIZES = (60, 100, 200, 400)
PICTURES = 4


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


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def scaling(settings: dict[str, Any], sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    """FLOPs and CPU ms per image of RAM and soft attention as the canvas grows."""
    rows = []
    for size in sizes:
        scaled = {**settings, "task": "cluttered", "size": size, "distractors": None}
        rows.append({
            "size": size,
            "ram_flops": cost.ram_flops(scaled),
            "soft_flops": cost.baseline_flops("soft", scaled),
            "ram_ms": cost.ram_latency_ms(scaled, 64),
            "soft_ms": cost.baseline_latency_ms("soft", scaled, 64),
        })  # fmt: skip
    return rows


def plot_scaling(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def draw_pictures(ram_dir: Path, soft_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """The RAM trajectories and soft attention maps on the same first test canvases."""
    from glimpse.agents.runs import visualise_run

    hard, soft = out_dir / "hard-trajectories.png", out_dir / "soft-attention.png"
    visualise_run(ram_dir, hard, PICTURES)
    visualise_run(soft_dir, soft, PICTURES)
    return hard, soft


def compare(
    recipes: Sequence[Recipe],
    seeds: int,
    out_dir: Path,
    runs_dir: str = "runs",
    progress: bool = True,
    scaling_sizes: tuple[int, ...] = SCALING_SIZES,
    budget: Layer | None = None,
) -> Path:
    """Trains or reuses the runs, measures them, writes ``out_dir/report.md``; returns its path.

    ``recipes`` are one RAM recipe and any of the full-view baselines' on one environment id.
    """
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds} must be at least 1.")
    if min(scaling_sizes, default=1) < 1:
        raise ConfigError(f"--scaling-sizes {min(scaling_sizes)}: canvas sides are at least 1.")
    agents = [r.agent for r in recipes]
    if sorted(set(agents)) != sorted(agents) or "ram" not in agents or "soft" not in agents:
        raise ConfigError(
            f"glimpse compare needs one RAM and one soft-attention recipe, and at most one of "
            f"each of {', '.join(COMPARED)}; got {', '.join(r.name for r in recipes)}."
        )
    foreign = [r.name for r in recipes if r.agent not in COMPARED]
    env_ids = {r.env_id for r in recipes}
    if foreign or len(env_ids) > 1:
        raise ConfigError(
            f"glimpse compare takes recipes of {', '.join(COMPARED)} on one environment id"
            f"{'; not ' + ', '.join(foreign) if foreign else ''}"
            f"{'; these use ' + ', '.join(sorted(env_ids)) if len(env_ids) > 1 else ''}."
        )
    env_id = env_ids.pop()
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, run_dirs = [], {}
    for recipe in recipes:
        summaries = []
        for seed in range(1, seeds + 1):
            run_dir = train_or_reuse(recipe, seed, runs_dir, progress, budget)
            run_dirs.setdefault(recipe.agent, run_dir)
            summaries.append(json.loads((run_dir / "test.json").read_text()))
        config = json.loads((run_dirs[recipe.agent] / "config.json").read_text())
        settings = config["env"]
        learner: Any = load_agent(run_dirs[recipe.agent])
        canvas = settings.get("size") or learner.task.canvas_size
        if recipe.agent == "ram":
            flops = cost.ram_flops(settings)
            episodes = evaluation_episodes(learner.env_settings, "test", 100)
            traj = record_trajectories(learner.policy(), episodes)
            pixels = cost.pixels_read(traj.locations, learner.train_episodes.sensor, canvas)
            latency = [cost.ram_latency_ms(settings, b) for b in (1, 256)]
        else:
            model = BaselineConfig(**config["model"])
            flops = cost.baseline_flops(recipe.agent, settings, model)
            pixels = float(np.prod(learner.task.canvas_shape[1:]))
            latency = [cost.baseline_latency_ms(recipe.agent, settings, b, model)
                       for b in (1, 256)]  # fmt: skip
        rows.append({
            "agent": recipe.agent,
            "recipe": recipe.name,
            "test_error": _mean_std([s["test_error"] for s in summaries]),
            "params": sum(p.numel() for p in learner.model.parameters()),
            "flops": flops,
            "pixels": pixels,
            "ms_batch1": latency[0],
            "ms_batch256": latency[1],
            "train_minutes": statistics.mean(s["train_seconds"] for s in summaries) / 60,
            "best_epoch": statistics.mean(s["best_epoch"] for s in summaries),
            "epochs": statistics.mean(s["epochs"] for s in summaries),
        })  # fmt: skip
    scaled = scaling(settings, scaling_sizes)
    plot_scaling(scaled, out_dir / "scaling.png")
    hard_png, soft_png = draw_pictures(run_dirs["ram"], run_dirs["soft"], out_dir)
    report = out_dir / "report.md"
    report.write_text(render_report(env_id, seeds, rows, scaled, hard_png, soft_png))
    (out_dir / "results.json").write_text(json.dumps({"rows": rows, "scaling": scaled}, indent=2))
    return report


def render_report(
    env_id: str, seeds: int, rows: list[dict[str, Any]],
    scaled: list[dict[str, Any]], hard_png: Path, soft_png: Path,
) -> str:  # fmt: skip
    lines = [
        f"# Hard versus soft attention on {env_id}",
        "",
        f"{seeds} seed(s) per model; test error on the fixed test set of the best validation "
        "epoch (mean ± std over seeds). FLOPs counted by torch.utils.flop_counter; CPU ms per "
        "image measured on this machine, canvases and glimpses included.",
        "",
        "| model | recipe | test error % | parameters | FLOPs / image | pixels read / image | "
        "ms / image (batch 1) | ms / image (batch 256) | epochs | training min | epochs to best |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = {"ram": "hard: RAM", "soft": "soft attention", "cnn": "CNN (2 layers)",
             "deep-cnn": "CNN (6 layers, batch norm)", "fc": "FC (2 layers)"}  # fmt: skip
    for r in rows:
        lines.append(
            f"| {names[r['agent']]} | `{r['recipe']}` | {r['test_error']} | {r['params']:,} | "
            f"{r['flops']:,} | "
            f"{r['pixels']:,.0f} | {r['ms_batch1']:.2f} | {r['ms_batch256']:.3f} | "
            f"{r['epochs']:.0f} | {r['train_minutes']:.1f} | {r['best_epoch']:.0f} |"
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
    lines += ["", "![scaling](scaling.png)", "",
              "## What each looks at (the same test canvases)", "",
              f"Hard attention, its glimpses step by step: ![hard]({hard_png.name})", "",
              f"Soft attention, its weights over the canvas at each step: ![soft]({soft_png.name})",
              ""]  # fmt: skip
    return "\n".join(lines)
