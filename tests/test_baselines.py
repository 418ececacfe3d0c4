"""Full-view baselines: soft attention's weights, and training through the command line."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from agents.baselines import BaselineConfig, SoftAttention
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


@pytest.mark.parametrize("agent", ["soft", "cnn", "fc"])
def test_baselines_train_evaluate_and_visualise(agent, tmp_path, capsys):
    args = ["train", "--agent", agent, "--env", "Glimpse/ClutteredMNIST60-v0", "--epochs", "1",
            "--epoch-size", "512", "--batch-size", "64", "--val-size", "500",
            "--runs-dir", str(tmp_path), "--name", "run", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    if agent == "soft":
        assert config["model"]["attention_steps"] == 8  # the environment's glimpse budget
    recorded = json.loads((run / "test.json").read_text())["test_error"]
    assert main(["eval", str(run)]) == 0
    assert json.loads((run / "eval-test.json").read_text())["error"] == pytest.approx(recorded)
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
        assert "no attention to draw" in capsys.readouterr().err


def test_soft_attention_flops_grow_with_the_canvas_while_rams_do_not():
    from agents.cost import baseline_flops, ram_flops

    def settings(size: int) -> dict:
        return {"task": "cluttered", "size": size, "glimpse_size": 12, "num_scales": 3,
                "scale_factor": 2, "glimpses": 8}  # fmt: skip

    soft = [baseline_flops("soft", settings(size)) for size in (60, 120)]
    ram = [ram_flops(settings(size)) for size in (60, 120)]
    assert ram[0] == ram[1] > 0
    assert soft[1] > 2.5 * soft[0]  # four times the pixels (plus the constant core)
    assert ram[0] < soft[0]


def test_compare_runs_end_to_end_on_a_tiny_budget(tmp_path, capsys):
    out = tmp_path / "report"
    command = ["compare", "--env", "Glimpse/ClutteredMNIST60-v0", "--seeds", "2", "--epochs",
               "1", "--ram-epochs", "2", "--epoch-size", "128", "--runs-dir",
               str(tmp_path / "runs"), "--out", str(out), "--scaling-sizes", "60", "120",
               "--no-progress", "--location-std", "0.1"]  # fmt: skip
    code = main(command)
    assert code == 0
    ram_model = json.loads((tmp_path / "runs" / "compare-clutteredmnist60-ram-seed1" /
                            "config.json").read_text())["model"]  # fmt: skip
    assert ram_model["location_std"] == 0.1  # RAM's options reach its runs
    report = (out / "report.md").read_text()
    for name in ("hard: RAM", "soft attention", "CNN (2 layers)", "FC (2 layers)", "±"):
        assert name in report
    for picture in ("scaling.png", "hard-trajectories.png", "soft-attention.png"):
        assert (out / picture).is_file() and picture in report
    results = json.loads((out / "results.json").read_text())
    assert {r["agent"]: r["epochs"] for r in results["rows"]} == {
        "ram": 2, "soft": 1, "cnn": 1, "fc": 1
    }  # fmt: skip
    ram, soft = results["scaling"]
    assert ram["ram_flops"] == soft["ram_flops"] and soft["soft_flops"] > ram["soft_flops"]
    assert len(list((tmp_path / "runs").iterdir())) == 8  # 4 models x 2 seeds, reused next time

    # The same names with another recipe: refused, not silently mixed into the report.
    assert main([*command[:-2], "--location-std", "0.2"]) == 2
    error = capsys.readouterr().err
    assert "model.location_std: 0.2 here, 0.1 in the run" in error and "--runs-dir" in error

    # RAM's recipe from a run's config.json: its std 0.1 matches, the typed epochs do not.
    runs = tmp_path / "runs"
    recipe = ["--ram-config", str(runs / "compare-clutteredmnist60-ram-seed1" / "config.json")]
    assert main([*command[:-2], *recipe, "--ram-epochs", "3"]) == 2
    error = capsys.readouterr().err
    assert "train.epochs: 3 here, 2 in the run" in error and "location_std" not in error
    soft = ["--ram-config", str(runs / "compare-clutteredmnist60-soft-seed1")]
    assert main([*command, *soft]) == 2
    assert "is a soft run" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "match"),
    [(["--seeds", "0"], "--seeds 0 must be at least 1"), (["--scaling-sizes", "0"], "at least 1")],
)
def test_compare_refuses_bad_counts_before_training_anything(tmp_path, capsys, option, match):
    runs = tmp_path / "runs"
    command = ["compare", "--env", "Glimpse/MNIST-v0", "--epochs", "1", "--runs-dir",
               str(runs), "--out", str(tmp_path / "report"), "--no-progress", *option]  # fmt: skip
    assert main(command) == 2
    assert match in capsys.readouterr().err and not runs.exists()


def test_compare_reuses_a_run_saved_before_an_option_existed(tmp_path):
    from agents.compare import train_or_reuse
    from agents.ram import RAMConfig
    from agents.runs import make_run_config
    from agents.trainer import TrainConfig

    env_id = "Glimpse/ClutteredMNIST60-v0"
    train = TrainConfig(epochs=2, runs_dir=str(tmp_path), name="old")
    config = make_run_config("ram", env_id, {}, RAMConfig(location_std=0.1), train)
    del config["model"]["reward"], config["train"]["track_test"]  # written by an older version
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    (tmp_path / "old" / "test.json").write_text("{}")  # finished: reused, not trained
    reused = train_or_reuse("ram", env_id, {}, train, False, {"location_std": 0.1})
    assert reused == tmp_path / "old"
    with pytest.raises(ConfigError, match=r"model\.reward: 'log-likelihood' here, 'correct'"):
        train_or_reuse("ram", env_id, {}, train, False,
                       {"location_std": 0.1, "reward": "log-likelihood"})  # fmt: skip
