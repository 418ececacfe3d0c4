"""Full-view baselines: soft attention's weights, and training through the command line."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from glimpse.agents.baselines import (
    BASELINES,
    BaselineConfig,
    DeepCNN,
    FullViewLearner,
    SoftAttention,
)
from glimpse.cli import main
from glimpse.errors import ConfigError


def test_soft_attention_weights_are_a_distribution_over_all_cells_that_depends_on_the_input():
    torch.manual_seed(0)
    model = SoftAttention((1, 60, 60), 10, BaselineConfig(attention_steps=5))
    canvases = torch.rand(3, 1, 60, 60)
    logits, weights = model.attend(canvases)
    assert logits.shape == (3, 10) and weights.shape == (3, 5, 15, 15)  # every 4 x 4 cell
    torch.testing.assert_close(weights.sum(dim=(2, 3)), torch.ones(3, 5))
    assert (weights > 0).all()  # soft: every cell is read
    assert not torch.allclose(weights[0], weights[1])


def test_deep_cnn_answers_the_same_wherever_the_digit_is_and_any_canvas_size_fits():
    torch.manual_seed(0)
    model = DeepCNN((1, 200, 200), 10, channels=4).eval()
    digit = torch.rand(1, 1, 28, 28)
    canvases = torch.zeros(2, 1, 200, 200)  # margins wider than a unit's view (99 pixels) / 2
    canvases[0, :, 64:92, 64:92] = digit
    canvases[1, :, 112:140, 96:124] = digit  # moved by multiples of the network's stride (16)
    logits = model(canvases)
    torch.testing.assert_close(logits[0], logits[1])  # the global max-pool
    assert model(torch.rand(3, 1, 60, 60)).shape == (3, 10)  # the same weights at 60 x 60
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 6


def test_full_view_learner_trains_in_training_mode_after_an_evaluation():
    """Batch normalisation: evaluation uses running statistics, training batch statistics."""
    learner = FullViewLearner("deep-cnn", {"task": "cluttered", "size": 60, "val_size": 100},
                              BaselineConfig(conv_channels=4), 0, torch.device("cpu"))  # fmt: skip
    running_mean = learner.model.encoder[1].running_mean.clone()
    learner.validation_error()
    assert not learner.model.training
    torch.testing.assert_close(learner.model.encoder[1].running_mean, running_mean)
    learner.loss(8)
    assert learner.model.training
    assert not torch.allclose(learner.model.encoder[1].running_mean, running_mean)


@pytest.mark.filterwarnings("ignore:precision bfloat16")  # on CPUs that emulate it
@pytest.mark.parametrize("agent", BASELINES)
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_bfloat16_training_computes_in_bfloat16_and_keeps_float32_weights(agent, precision):
    config = BaselineConfig(conv_channels=4, attention_steps=2, precision=precision)
    settings = {"task": "cluttered", "size": 60, "val_size": 100}
    learner = FullViewLearner(agent, settings, config, 0, torch.device("cpu"))
    first = next(m for m in learner.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    seen: list[torch.dtype] = []
    first.register_forward_hook(lambda module, inputs, out: seen.append(out.dtype))
    loss = learner.loss(8)["total"]
    loss.backward()
    assert seen == [getattr(torch, precision)] and loss.dtype == torch.float32
    weights = list(learner.model.parameters())
    assert all(p.dtype == torch.float32 and p.grad is not None for p in weights)
    assert all(p.grad.dtype == torch.float32 and p.grad.abs().sum() > 0 for p in weights)
    learner.validation_error()  # evaluation: float32 whatever the training's precision
    assert seen[-1] == torch.float32


def test_bfloat16_training_warns_where_the_cpu_would_emulate_it(monkeypatch):
    from glimpse.agents import baselines

    monkeypatch.setattr(baselines, "cpu_has_bfloat16", lambda: False)
    settings = {"task": "cluttered", "size": 60, "val_size": 100}
    learner = FullViewLearner(
        "cnn", settings, BaselineConfig(precision="bfloat16"), 0, torch.device("cpu")
    )
    learner.validation_error()  # evaluating is float32: nothing to warn about
    with pytest.warns(UserWarning, match="no bfloat16 instructions.*--precision auto"):
        learner.loss(8)
    with pytest.raises(ConfigError, match="precision"):
        BaselineConfig(precision="float16")


def test_cpu_has_bfloat16_reads_the_cpus_own_flags(tmp_path):
    """Plain AVX-512 is not enough (oneDNN's test says yes there, and emulates)."""
    from glimpse.agents.baselines import cpu_has_bfloat16

    cpuinfo = tmp_path / "cpuinfo"
    for flags, native in [("fpu avx2 avx512f avx512bw avx512_vnni", False),
                          ("fpu avx512f avx512_bf16", True), ("fpu amx_tile amx_bf16", True)]:
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
        assert cpu_has_bfloat16(cpuinfo) is native
    assert cpu_has_bfloat16(tmp_path / "absent") is False


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_trains_in_bfloat16_only_where_the_cpu_has_it(monkeypatch, native):
    from glimpse.agents import baselines

    monkeypatch.setattr(baselines, "cpu_has_bfloat16", lambda: native)
    cpu = torch.device("cpu")
    assert baselines.training_precision("auto", cpu) == ("bfloat16" if native else "float32")
    assert baselines.training_precision("float32", cpu) == "float32"
    assert baselines.training_precision("bfloat16", cpu) == "bfloat16"
    settings = {"task": "cluttered", "size": 60, "val_size": 100}
    learner = FullViewLearner("fc", settings, BaselineConfig(precision="auto"), 0, cpu)
    first = next(m for m in learner.model.modules() if isinstance(m, nn.Linear))
    seen: list[torch.dtype] = []
    first.register_forward_hook(lambda module, inputs, out: seen.append(out.dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never trains in an emulated bfloat16: no warning
        terms = learner.loss(8)
    assert seen == [torch.bfloat16 if native else torch.float32]
    assert float(terms["bfloat16"]) == float(native)  # logged as metrics' train_bfloat16


def test_auto_precision_is_recorded_per_epoch_and_decided_again_on_resume(
    tmp_path, monkeypatch
):
    """Trained on a CPU with bfloat16 and resumed on one without, halfway through epoch 2: the
    metrics say so, and the report calls the run partly bfloat16."""
    import os
    import signal

    from glimpse.agents import baselines
    from glimpse.agents.compare import trained_precision

    monkeypatch.setattr(baselines, "cpu_has_bfloat16", lambda: True)
    original_loss, calls = FullViewLearner.loss, {"n": 0}

    def interrupted_loss(self, batch_size, progress=0.0):
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 2, batch 2 of 4: its step completes, then the run stops
            os.kill(os.getpid(), signal.SIGINT)
        return original_loss(self, batch_size, progress)

    monkeypatch.setattr(FullViewLearner, "loss", interrupted_loss)
    args = ["train", "fc", "--env", "Glimpse/ClutteredMNIST60-v0", "--precision", "auto",
            "--epochs", "2", "--epoch-size", "256", "--batch-size", "64", "--val-size", "100",
            "--runs-dir", str(tmp_path), "--name", "run", "--no-progress"]  # fmt: skip
    assert main(args) == 130
    monkeypatch.setattr(FullViewLearner, "loss", original_loss)
    monkeypatch.setattr(baselines, "cpu_has_bfloat16", lambda: False)
    run = tmp_path / "run"
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["train_bfloat16"]) for r in rows] == [(1, 1.0), (2, 0.5)]
    assert json.loads((run / "config.json").read_text())["model"]["precision"] == "auto"
    assert trained_precision([run]) == "partly bfloat16"


def test_the_report_says_what_arithmetic_the_runs_trained_in(tmp_path):
    from glimpse.agents.compare import trained_precision
    from glimpse.agents.runs import resolve_config

    def run(precision: str, *shares: float | None) -> Path:
        folder = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        config = resolve_config("fc", "Glimpse/ClutteredMNIST60-v0",
                                [{"model": {"precision": precision}}])  # fmt: skip
        (folder / "config.json").write_text(json.dumps(config))
        lines = [{"epoch": e + 1, "val_error": 5.0,
                  **({} if share is None else {"train_bfloat16": share})}
                 for e, share in enumerate(shares)]  # fmt: skip
        (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        return folder

    assert trained_precision([run("auto", 1.0, 1.0), run("auto", 1.0)]) == "bfloat16"
    assert trained_precision([run("auto", 0.0, 0.0), run("float32", 0.0)]) == "float32"
    # Resumed on another machine halfway through an epoch, or a seed trained elsewhere:
    assert trained_precision([run("auto", 1.0, 0.5), run("auto", 0.0)]) == "partly bfloat16"
    assert trained_precision([run("auto", 1.0), run("auto", 0.0)]) == "partly bfloat16"
    assert trained_precision([run("bfloat16", 1.0), run("float32", 0.0)]) == "partly bfloat16"
    assert trained_precision([run("bfloat16"), run("bfloat16")]) == "bfloat16"  # explicit
    assert trained_precision([run("auto", 1.0, None)]) == "precision unrecorded"


def test_soft_attention_computes_its_docstring_equations():
    """The fast path (sigmoid for tanh, NHWC encoder) is the same function as the equations."""
    torch.manual_seed(0)
    model = SoftAttention((1, 60, 60), 10, BaselineConfig(attention_steps=4))
    canvases = torch.rand(2, 1, 60, 60)
    cells = model.encoder(canvases).flatten(2).transpose(1, 2)  # f_i
    h = torch.zeros(2, model.core.hidden_size)
    expected = []
    for _ in range(4):
        a = model.score(torch.tanh(model.key(cells) + model.query(h)[:, None])).squeeze(2)
        alpha = torch.softmax(a, dim=1)
        h = model.core((alpha[..., None] * cells).sum(1), h)
        expected.append(alpha)
    logits, weights = model.attend(canvases)
    torch.testing.assert_close(weights.flatten(2), torch.stack(expected, 1))
    torch.testing.assert_close(logits, model.classifier(h))


@pytest.mark.parametrize("agent", ["soft", "cnn", "deep-cnn", "fc"])
def test_baselines_train_evaluate_and_visualise(agent, tmp_path, capsys):
    args = ["train", agent, "--env", "Glimpse/ClutteredMNIST60-v0", "--epochs", "1",
            "--epoch-size", "512", "--batch-size", "64", "--val-size", "500",
            "--runs-dir", str(tmp_path), "--name", "run", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    if agent == "soft":
        assert config["model"]["attention_steps"] == 8  # the environment's glimpse budget
    recorded = json.loads((run / "test.json").read_text())["test_error"]
    assert main(["eval", str(run), "--out", str(tmp_path / "eval.json")]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["error"] == pytest.approx(recorded)
    if agent == "soft":  # the share of its weight on the digit's cells, at each of 8 steps
        assert len(result["on_target"]["per_step"]) == 8
        assert 0 < result["on_target"]["overall"] <= 100
    else:
        assert "on_target" not in result  # it looks at the whole canvas at once
    assert main(["eval", str(run), "--locations", "random"]) == 2  # RAM only: a clear refusal
    assert "makes a trained RAM model look elsewhere" in capsys.readouterr().err
    gif, png = tmp_path / "attention.gif", tmp_path / "attention.png"
    if agent == "soft":  # its attention weights at each of the 8 steps, on 3 test canvases
        assert main(["viz", str(run), "--n", "3", "--out", str(gif)]) == 0
        assert main(["viz", str(run), "--n", "3", "--out", str(png)]) == 0
        with Image.open(gif) as animation:
            assert animation.n_frames == 8
        with Image.open(png) as grid:
            assert grid.width > 2 * grid.height  # 3 rows of 8 steps
    else:  # CNN and FC attend to nothing: a clear refusal, not a traceback
        assert main(["viz", str(run), "--out", str(gif)]) == 2
        assert "no attention to draw" in " ".join(capsys.readouterr().err.split())


def test_soft_attention_flops_grow_with_the_canvas_while_rams_do_not():
    from glimpse.agents.cost import baseline_flops, ram_flops

    def settings(size: int) -> dict:
        return {"task": "cluttered", "size": size, "glimpse_size": 12, "num_scales": 3,
                "scale_factor": 2, "glimpses": 8}  # fmt: skip

    soft = [baseline_flops("soft", settings(size)) for size in (60, 120)]
    ram = [ram_flops(settings(size)) for size in (60, 120)]
    assert ram[0] == ram[1] > 0
    assert soft[1] > 2.5 * soft[0]  # four times the pixels (plus the constant core)
    assert ram[0] < soft[0]


def test_peak_memory_follows_the_tensors_a_run_creates_and_frees():
    from glimpse.agents.cost import peak_memory_bytes

    weights = torch.ones(10_000)  # the caller's: never counted, nor views of it

    def run() -> torch.Tensor:
        view = weights.view(100, 100).t()  # a view: nothing new
        b = weights * 2.0  # 40 KB
        c = b + 1.0  # 40 KB more while b lives
        del b
        return (c * 3.0).sum() + view[0, 0]  # c, its product and a 4-byte sum: the peak

    assert peak_memory_bytes(run) == 80_004
    assert peak_memory_bytes(lambda: torch.zeros(3, 1000)) == 12_000


def test_latency_times_the_models_in_turns_and_reports_each_ones_time_per_image():
    from glimpse.agents.cost import latency_ms

    order: list[str] = []
    runs = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    ms = latency_ms(runs, batch=4, seconds=0.0, min_rounds=2, block_seconds=0.0)
    assert set(ms) == {"a", "b"} and all(value >= 0.0 for value in ms.values())
    # two warm-up calls each, then per round a block each (one warming call, two timed), in
    # an order shuffled every round
    assert order[:4] == ["a", "a", "b", "b"] and len(order) == 4 + 2 * 2 * 3
    rounds = ["".join(order[4 + 6 * r : 10 + 6 * r]) for r in range(2)]
    assert all(sorted([r[:3], r[3:]]) == ["aaa", "bbb"] for r in rounds)
    one_image = latency_ms({"slept": lambda: time.sleep(0.002)}, batch=1, seconds=0.0)
    four_images = latency_ms({"slept": lambda: time.sleep(0.002)}, batch=4, seconds=0.0)
    assert one_image["slept"] >= 2.0 and four_images["slept"] < one_image["slept"] / 2
    firsts: list[str] = []
    runs = {"a": lambda: firsts.append("a"), "b": lambda: firsts.append("b")}
    latency_ms(runs, batch=1, seconds=0.0, min_rounds=8, block_seconds=0.0)
    assert {firsts[4 + 6 * r] for r in range(8)} == {"a", "b"}  # the order changes by round


@pytest.mark.filterwarnings("ignore:precision bfloat16")  # on CPUs that emulate it
def test_compare_runs_end_to_end_on_a_tiny_budget(tmp_path, capsys):
    from glimpse.agents.compare import compare, draw_pictures, plot_frontier, render_report
    from glimpse.agents.recipes import Recipe

    env_id, runs, out = "Glimpse/ClutteredMNIST60-v0", tmp_path / "runs", tmp_path / "report"
    tiny = {"epochs": 1, "epoch_size": 128}
    recipes = [
        Recipe("tiny-ram", "ram", env_id, {"model": {"location_std": 0.1},
                                           "train": {**tiny, "epochs": 2}}),
        *(Recipe(f"tiny-{a}", a, env_id, {"train": tiny}) for a in ("soft", "fc")),
        Recipe("tiny-cnn", "cnn", env_id, {"model": {"precision": "bfloat16"}, "train": tiny}),
    ]  # fmt: skip
    report = compare(recipes, out, 2, str(runs), progress=False, scaling_sizes=(60, 120))
    ram_config = json.loads((runs / "tiny-ram-seed1" / "config.json").read_text())
    assert ram_config["model"]["location_std"] == 0.1 and ram_config["recipe"] == "tiny-ram"
    text = report.read_text()
    for name in ("hard: RAM", "soft attention", "CNN (2 layers)", "FC (2 layers)", "±",
                 "failed seeds", "Where each looks", "random locations"):  # fmt: skip
        assert name in text
    for picture in ("frontier.png", "scaling.png", "hard-trajectories.png", "soft-attention.png"):
        assert (out / picture).is_file() and picture in text
    results = json.loads((out / "results.json").read_text())
    assert "## Hard attention's glimpse budget" not in text  # one RAM recipe: no sweep
    rows = {r["agent"]: r for r in results["rows"]}
    assert {a: r["train_precision"] for a, r in rows.items()} == {
        "ram": "float32", "soft": "float32", "cnn": "bfloat16", "fc": "float32"
    }  # fmt: skip
    accuracy = text[text.index("## Accuracy and stability") :].split("\n\n")[1]
    marked = {line.split(" | ")[1]: line.endswith("(bfloat16) |")
              for line in accuracy.splitlines()[2:]}  # fmt: skip
    assert marked == {"`tiny-ram`": False, "`tiny-soft`": False, "`tiny-fc`": False,
                      "`tiny-cnn`": True}  # fmt: skip
    # The same RAM row with 2 glimpses beside it: a sweep, joined on the frontier, and a table.
    eight = rows["ram"]
    two = {**eight, "recipe": "tiny-ram-2g", "glimpses": 2, "flops": eight["flops"] // 4}
    plot_frontier([two, *results["rows"]], env_id, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").is_file() and eight["glimpses"] == 8
    text = render_report(env_id, [two, *results["rows"]], results["scaling"], {})
    # A report of RAM and CNNs only (as at 200 px) still draws where RAM looks.
    (tmp_path / "alone").mkdir()
    alone = draw_pictures(recipes[:1], {"tiny-ram": [runs / "tiny-ram-seed1"]}, tmp_path / "alone")
    assert list(alone) == ["ram"] and alone["ram"].is_file()
    alone_text = render_report(env_id, results["rows"], results["scaling"], alone)
    assert "![hard](hard-trajectories.png)" in alone_text and "![soft]" not in alone_text
    sweep = text[text.index("## Hard attention's glimpse budget") :].split("\n\n")[2]
    assert [line.split(" | ")[:2] for line in sweep.splitlines()[2:]] == [
        ["| 2", "`tiny-ram-2g`"], ["| 8", "`tiny-ram`"]
    ]  # fmt: skip
    assert {agent: r["epochs"] for agent, r in rows.items()} == {
        "ram": 2, "soft": 1, "cnn": 1, "fc": 1
    }  # fmt: skip
    for agent, row in rows.items():
        recorded = [json.loads((runs / f"tiny-{agent}-seed{s}" / "test.json").read_text())
                    ["test_error"] for s in (1, 2)]  # fmt: skip
        assert row["errors"] == recorded and row["failed_seeds"] in (0, 1)
        looks = agent in ("ram", "soft")  # the CNN and FC weigh the whole canvas at once
        assert (row["on_target"] is not None) == looks
    assert [len(rows[a]["on_target"]["per_step"]) for a in ("ram", "soft")] == [8, 8]
    assert [len(rows["ram"]["told"][how]) for how in ("random", "fixed")] == [2, 2]
    assert rows["ram"]["pixels"] < rows["soft"]["pixels"] == 3600
    ram, soft = results["scaling"]
    assert ram["ram_flops"] == soft["ram_flops"] and soft["soft_flops"] > ram["soft_flops"]
    assert len(list(runs.iterdir())) == 8  # 4 recipes x 2 seeds, reused next time
    # Again (the two quickest recipes to measure, to keep the test short): nothing trains.
    compare(recipes[2:], out, 2, str(runs), progress=False, scaling_sizes=(60,))
    assert len(list(runs.iterdir())) == 8

    # Published runs (a recipe's `runs`): read from the results folder, nothing trained.
    published = [Recipe(r.name, r.agent, env_id, r.settings, runs=(f"{r.name}-seed2",))
                 for r in recipes[2:]]  # fmt: skip
    compare(published, tmp_path / "again", results_dir=runs, scaling_sizes=(60,))
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert [r["errors"] for r in again["rows"]] == [[r["errors"][1]] for r in results["rows"][2:]]
    assert len(list(runs.iterdir())) == 8
    with pytest.raises(ConfigError, match=r"no published runs.*--seeds N"):
        compare(recipes, tmp_path / "none", results_dir=runs)

    # The same names with other settings: refused, not silently mixed into the report.
    changed = Recipe("tiny-ram", "ram", env_id, {"model": {"location_std": 0.2},
                                                 "train": {**tiny, "epochs": 2}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"model\.location_std: 0\.2 vs 0\.1.*--runs-dir"):
        compare([changed, *recipes[1:]], out, 1, str(runs), progress=False)


def test_a_glimpse_budget_sweep_is_ram_recipes_that_differ_only_in_glimpses():
    from glimpse.agents.compare import budget_family, budget_sweeps
    from glimpse.agents.recipes import Recipe

    env_id, model = "Glimpse/ClutteredMNIST60-v0", {"model": {"location_std": 0.1}}
    recipes = [
        Recipe("ram-8", "ram", env_id, model),
        Recipe("ram-2", "ram", env_id, {**model, "env": {"glimpses": 2}}),
        Recipe("ram-4", "ram", env_id, {**model, "env": {"glimpses": 4}}),
        Recipe("wide-2", "ram", env_id, {"model": {"hidden_size": 512}, "env": {"glimpses": 2}}),
        Recipe("wide-8", "ram", env_id, {"model": {"hidden_size": 512}}),
        Recipe("other-lr", "ram", env_id, {**model, "train": {"lr": 1e-4}}),
        Recipe("soft-2", "soft", env_id, {"env": {"glimpses": 2}}),
        Recipe("soft-8", "soft", env_id, {}),
    ]
    budgets = {"ram-8": 8, "ram-2": 2, "ram-4": 4, "wide-2": 2, "wide-8": 8, "other-lr": 8,
               "soft-2": 2, "soft-8": 8}  # fmt: skip
    rows = [{"recipe": r.name, "glimpses": budgets[r.name], "budget_family": budget_family(r)}
            for r in recipes]  # fmt: skip
    sweeps = [[row["recipe"] for row in sweep] for sweep in budget_sweeps(rows)]
    assert sweeps == [["ram-2", "ram-4", "ram-8"], ["wide-2", "wide-8"]]


@pytest.mark.parametrize(
    ("option", "match"),
    [(["--seeds", "0"], "--seeds 0 must be at least 1"),
     (["--seeds", "1", "--scaling-sizes", "0"], "at least 1"),
     (["--seeds", "1"], "on one environment id"),
     ([], "pass --seeds N with them")],
)
def test_compare_refuses_bad_input_before_training_anything(tmp_path, capsys, option, match):
    runs = tmp_path / "runs"
    others = ["compare-clutteredmnist60-ram", "compare-clutteredmnist60-soft"]
    command = ["compare", "mnist-6-ram", *others, "--epochs", "1", "--runs-dir", str(runs),
               "--out", str(tmp_path / "report"), "--no-progress", *option]  # fmt: skip
    assert main(command) == 2
    assert match in " ".join(capsys.readouterr().err.split()) and not runs.exists()


def test_compare_reuses_a_run_written_before_the_format_recorded_every_setting(tmp_path):
    from glimpse.agents.compare import train_or_reuse
    from glimpse.agents.recipes import Recipe

    env_id = "Glimpse/ClutteredMNIST60-v0"
    recipe = Recipe("old", "ram", env_id, {"model": {"location_std": 0.1}, "train": {"epochs": 2}})
    old = {  # format 1: no reward, no rollouts_per_image; run settings inside train
        "agent": "ram", "env_id": env_id, "env": {"task": "cluttered", "size": 60,
        "distractors": 4, "glimpse_size": 12, "num_scales": 3, "scale_factor": 2, "glimpses": 8},
        "model": {"location_std": 0.1}, "train": {"epochs": 2, "seed": 1, "name": "old-seed1",
        "runs_dir": str(tmp_path), "reinforce_weight": 1.0},
    }  # fmt: skip
    (tmp_path / "old-seed1").mkdir()
    (tmp_path / "old-seed1" / "config.json").write_text(json.dumps(old))
    (tmp_path / "old-seed1" / "test.json").write_text("{}")  # finished: reused, not trained
    assert train_or_reuse(recipe, 1, str(tmp_path), False) == tmp_path / "old-seed1"
    other = Recipe("old", "ram", env_id, {"model": {"location_std": 0.1, "reward": "probability"},
                                          "train": {"epochs": 2}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"model\.reward: 'probability' vs 'correct'"):
        train_or_reuse(other, 1, str(tmp_path), False)


def test_attention_on_target_sums_the_weight_of_the_cells_over_the_box():
    from glimpse.agents.baselines import attention_on_target

    weights = np.full((2, 3, 15, 15), 1 / 225, np.float32)  # 60 px canvas, cells of 4 x 4
    weights[1, 2] = 0.0
    weights[1, 2, 0, 0] = 1.0  # all the weight on the top-left cell
    boxes = np.array([[0, 0, 8, 8], [4, 4, 9, 5]])  # 2 x 2 cells; rows 1-2 x column 1
    shares = attention_on_target(weights, boxes, 60, 60)
    assert shares[0] == pytest.approx([4 / 225] * 3)
    assert shares[1, :2] == pytest.approx([2 / 225] * 2) and shares[1, 2] == 0.0


def test_last_fifth_gain_says_whether_training_was_still_improving(tmp_path):
    from glimpse.agents.compare import last_fifth_gain

    def run(errors: list[float]) -> object:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        lines = [json.dumps({"epoch": e + 1, "val_error": v}) for e, v in enumerate(errors)]
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        return folder

    still_falling = [9, 8, 7, 6, 5, 4, 3, 2, 1.5, 1.0]  # best before the last fifth: 2
    assert last_fifth_gain(run(still_falling)) == pytest.approx(1.0)
    flat = [9, 5, 3, 2, 1.0, 1.1, 1.05, 1.2, 1.0, 1.02]  # the best came early
    assert last_fifth_gain(run(flat)) == pytest.approx(0.0)
    assert np.isnan(last_fifth_gain(run([4.0])))
    # two runs that each gained 5 of 5,000 validation canvases gain the same, 0.1: not under it
    # (1.0 - 0.9 and 2.02 - 1.92 differ in binary: 0.0999... and 0.1000...1)
    on_the_line = [last_fifth_gain(run([9, 8, 7, 6, 5, 4, 3, best, 5.0, best - 0.1]))
                   for best in (1.0, 2.02)]  # fmt: skip
    assert on_the_line == [0.1, 0.1]
