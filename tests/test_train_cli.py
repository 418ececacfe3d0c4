"""Training runs through the command line: run directories, eval, viz, resume, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import gymnasium
import pytest
import torch
from PIL import Image

from glimpse.agents.learners import RAMLearner
from glimpse.agents.run_directory import load_checkpoint
from glimpse.agents.trainer import WeightAverage
from glimpse.cli import main
from glimpse.data import FASHION_MNIST, check_dataset
from glimpse.drawing import TILE_GAP

TINY = [
    "ram", "--env", "Glimpse/MNIST-v0", "--epochs", "2", "--epoch-size", "1024",
    "--batch-size", "64", "--val-size", "500", "--eval-episodes", "500", "--no-progress",
]  # fmt: skip


def train(tmp_path, name, *extra):
    return main(["train", *TINY, "--runs-dir", str(tmp_path), "--name", name, *extra])


def paragraph(text: str) -> str:
    """A message as one line (the command line wraps its errors at 90 columns)."""
    return " ".join(text.split())


def glimpse_cli(*args):
    """The installed command line in a subprocess (exit codes and stderr as a user sees them)."""
    return subprocess.run(
        [sys.executable, "-m", "glimpse.cli", *args], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert train(root, "tiny") == 0
    return root / "tiny"


def test_a_run_directory_has_everything(tiny_run):
    for name in ("config.json", "metrics.jsonl", "test.json", "checkpoints/last.pt",
                 "checkpoints/best.pt"):  # fmt: skip
        assert (tiny_run / name).is_file(), name
    assert any((tiny_run / "tb").iterdir())
    lines = (tiny_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["env"]["glimpses"] == 6 and config["model"]["core"] == "rnn"
    # tensors and plain data only: torch loads them without unpickling any class
    best = torch.load(tiny_run / "checkpoints/best.pt", weights_only=True)
    assert set(best) == {"model", "config", "epoch", "val_error"}  # small: no optimiser state
    torch.load(tiny_run / "checkpoints/last.pt", weights_only=True)
    assert not (tiny_run / "checkpoints/previous.pt").exists()  # a finished run needs none


def test_eval_takes_the_error_and_where_it_looked_from_one_pass_as_each_alone(tiny_run):
    from glimpse.agents.runs import load_agent

    trained = load_agent(tiny_run)
    error, looking = trained.error_and_looking("val")
    assert error == trained.error("val") and looking == trained.looking("val")
    _, looking = trained.error_and_looking("val", samples=3)  # still the mean locations'
    assert looking == trained.looking("val")


def test_eval_reproduces_the_recorded_test_error(tiny_run, tmp_path, capsys):
    recorded = json.loads((tiny_run / "test.json").read_text())["test_error"]
    before = sorted(path.name for path in tiny_run.rglob("*"))
    assert main(["eval", str(tiny_run)]) == 0
    assert sorted(path.name for path in tiny_run.rglob("*")) == before  # the run is unchanged
    assert main(["eval", str(tiny_run), "--out", str(tmp_path / "eval.json")]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["error"] == pytest.approx(recorded, abs=1e-9)
    p = recorded / 100  # the binomial standard error of the rate, in points
    assert result["standard_error"] == pytest.approx(100 * (p * (1 - p) / result["images"]) ** 0.5)
    output = capsys.readouterr().out
    assert f"{recorded:.2f}% (standard error {result['standard_error']:.2f})" in output
    looking = result["on_target"]  # where it looked: 6 glimpses, each on the digit or not
    assert len(looking["per_step"]) == 6 and 0 <= looking["last"] <= 100
    assert looking["overall"] == pytest.approx(sum(looking["per_step"]) / 6)
    assert f"finest patch overlaps the target: {looking['overall']:.1f}% overall" in output
    out = tmp_path / "samples3.json"
    assert main(["eval", str(tiny_run), "--samples", "3", "--out", str(out)]) == 0  # Monte Carlo
    assert json.loads(out.read_text())["samples"] == 3
    for locations in ("random", "fixed"):  # the same model looking where it is told
        out = tmp_path / f"{locations}.json"
        assert main(["eval", str(tiny_run), "--locations", locations, "--out", str(out)]) == 0
        told = json.loads(out.read_text())
        assert told["locations"] == locations and len(told["on_target"]["per_step"]) == 6
        assert f"{told['error']:.2f}%" in capsys.readouterr().out
    assert main(["eval", str(tiny_run), "--locations", "random", "--samples", "3"]) == 2
    assert "leave --samples out" in " ".join(capsys.readouterr().err.split())


def test_curves_puts_the_recorded_validation_errors_side_by_side(tiny_run, tmp_path, capsys):
    metrics = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    twin = tmp_path / "twin"  # a second run: epoch 2 made worse, no test result
    twin.mkdir()
    worse = [dict(row, val_error=row["val_error"] + 10 * (row["epoch"] == 2)) for row in metrics]
    (twin / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in worse))
    assert main(["curves", str(tiny_run), str(twin), "--every", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| epoch | tiny | twin |"
    first, second = metrics[0]["val_error"], metrics[1]["val_error"]
    assert lines[2] == f"| 1 | {first:.2f} | {first:.2f} |"  # a tie: nothing bold
    assert lines[3] == f"| 2 | **{second:.2f}** | {second + 10:.2f} |"
    test_error = json.loads((tiny_run / "test.json").read_text())["test_error"]
    assert lines[-1] == f"| test | {test_error:.2f} | - |"
    namesake = tmp_path / "elsewhere" / "tiny"  # the same folder name in another place
    shutil.copytree(tiny_run, namesake)
    assert main(["curves", str(tiny_run), str(namesake)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"| epoch | {tiny_run} | {namesake} |"
    (twin / "metrics.jsonl").write_text('{"epoch": 1, "val_err')  # cut short by a crash
    assert main(["curves", str(twin)]) == 2
    assert "not JSON" in paragraph(capsys.readouterr().err)
    (twin / "metrics.jsonl").write_text('{"epoch": 1}\n')  # not a validation line
    assert main(["curves", str(twin)]) == 2
    assert "no 'val_error'" in paragraph(capsys.readouterr().err)


def test_viz_writes_a_gif_a_png_and_the_trajectories(tiny_run, tmp_path):
    assert main(["viz", str(tiny_run), "--n", "4", "--out", str(tmp_path / "t.gif")]) == 0
    assert main(["viz", str(tiny_run), "--n", "4", "--out", str(tmp_path / "t.png")]) == 0
    with Image.open(tmp_path / "t.gif") as gif:
        assert gif.n_frames == 6  # one frame per glimpse
    with Image.open(tmp_path / "t.png") as png:  # one column per step, one row per image
        assert (png.width - TILE_GAP) == 6 * (180 + TILE_GAP)
    assert (tmp_path / "t.npz").is_file()  # the trajectories, beside the picture
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    assert main(["viz", str(copy), "--n", "2"]) == 0  # by default into the run folder
    assert (copy / "trajectories.gif").is_file() and (copy / "trajectories.npz").is_file()


def test_config_file_round_trip(tiny_run, tmp_path):
    assert main(["train", "--config", str(tiny_run / "config.json"), "--runs-dir",
                 str(tmp_path), "--name", "again", "--no-progress"]) == 0  # fmt: skip
    again = json.loads((tmp_path / "again/config.json").read_text())
    original = json.loads((tiny_run / "config.json").read_text())
    assert again["env"] == original["env"] and again["model"] == original["model"]
    assert (json.loads((tmp_path / "again/test.json").read_text())["test_error"]
            == json.loads((tiny_run / "test.json").read_text())["test_error"])  # fmt: skip


OUT_OF_CHOICES = [
    ("train", "optimizer", "adamw"),
    ("model", "reward", "accuracy"),
    ("env", "first_location", "corner"),
]


@pytest.mark.parametrize(("part", "key", "value"), OUT_OF_CHOICES)
def test_a_config_file_value_outside_its_choices_gets_a_clear_error(
    tiny_run, tmp_path, capsys, part, key, value
):
    config = json.loads((tiny_run / "config.json").read_text())
    config[part][key] = value
    (tmp_path / "bad.json").write_text(json.dumps(config))
    args = ["--runs-dir", str(tmp_path), "--name", "bad", "--no-progress"]
    assert main(["train", "--config", str(tmp_path / "bad.json"), *args]) == 2
    assert f"{key}={value!r}; choose one of" in paragraph(capsys.readouterr().err)


BAD_CONFIG_VALUES = [  # (section, key, value, what the one-line error says)
    ("env", "glimpses", "six", "glimpses='six' is a string, not an integer"),
    ("env", "task", 3, "task=3 is an integer, not a string"),
    ("model", "hidden_size", 256.5, "hidden_size=256.5 is a number, not an integer"),
    ("model", "reinforce_core", "yes", "reinforce_core='yes' is a string, not a boolean"),
    ("train", "lr", "fast", "lr='fast' is a string, not a number"),
    ("train", "epoch_size", True, "epoch_size=True is a boolean (true or false), not an integer"),
    ("train", "nope", 1, "The train section of"),
    ("model", "nope", 1, "The model section of"),
    ("env", "nope", 1, "The env section of"),
]


@pytest.mark.parametrize(("part", "key", "value", "message"), BAD_CONFIG_VALUES)
def test_a_config_file_value_of_the_wrong_type_or_name_gets_a_clear_error(
    tiny_run, tmp_path, capsys, part, key, value, message
):
    """Every section of a hand-edited config.json is checked before any training starts."""
    config = json.loads((tiny_run / "config.json").read_text())
    config[part][key] = value
    (tmp_path / "bad.json").write_text(json.dumps(config))
    args = ["--runs-dir", str(tmp_path), "--name", "bad", "--no-progress"]
    assert main(["train", "--config", str(tmp_path / "bad.json"), *args]) == 2
    error = capsys.readouterr().err
    assert message in paragraph(error) and error.startswith("glimpse: error: ")
    assert "\n\n" not in error and "Traceback" not in error  # one paragraph, no traceback
    assert not (tmp_path / "bad").exists()


def test_resume_after_ctrl_c_ends_with_the_same_metrics(tmp_path, monkeypatch, capsys):
    # A schedule that follows the run's progress, and validation of the weights' average,
    # which the resumed run must continue from where it stood.
    exploring = ("--location-std-start", "0.2", "--ema-decay", "0.9")
    assert train(tmp_path, "straight", *exploring) == 0
    original_loss = RAMLearner.loss
    calls = {"n": 0}

    def interrupted_loss(self, batch_size, progress):
        calls["n"] += 1
        if calls["n"] == 21:  # epoch 2, batch 5: as if the user pressed Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)
        return original_loss(self, batch_size, progress)

    monkeypatch.setattr(RAMLearner, "loss", interrupted_loss)
    assert train(tmp_path, "interrupted", *exploring) == 130
    saved = load_checkpoint(tmp_path / "interrupted/checkpoints/last.pt")
    assert (saved["epoch"], saved["batch"]) == (1, 5)
    monkeypatch.setattr(RAMLearner, "loss", original_loss)
    # The run continues wherever it now lies, and may change where it runs (its device was
    # "auto"; --threads may change too, but that reorders float sums, which this compares).
    (tmp_path / "elsewhere").mkdir()
    moved = shutil.move(tmp_path / "interrupted", tmp_path / "elsewhere/interrupted")
    capsys.readouterr()
    assert main(["train", "--resume", str(moved), "--device", "cpu", "--no-progress"]) == 0
    assert f"glimpse: resuming {moved} at epoch 2 of 2, batch 5 of 16\n" in capsys.readouterr().err
    assert json.loads((moved / "config.json").read_text())["run"]["device"] == "cpu"

    def metrics(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        keep = ("epoch", "val_error", "val_error_raw", "train_total", "lr", "train_location_std")
        return [{k: json.loads(line)[k] for k in keep} for line in lines]

    assert metrics("elsewhere/interrupted") == metrics("straight")
    test = [json.loads((tmp_path / n / "test.json").read_text())["test_error"]
            for n in ("elsewhere/interrupted", "straight")]  # fmt: skip
    assert test[0] == test[1]


def test_weight_average_moves_towards_the_weights_and_stands_in_for_them_when_applied():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    average = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    gap = 1.0  # between the average and the weight
    for step in range(1, 13):  # a short memory at first, then the decay itself from step 9
        average.update()
        gap *= min(0.5, (1 + step) / (10 + step))
        assert average.averages[0].item() == pytest.approx(1 - gap)
    with torch.no_grad():
        average.averages[0].fill_(0.25)
    with average.applied():
        assert model.weight.item() == 0.25
    assert model.weight.item() == 1.0


def test_ema_decay_validates_keeps_and_tests_the_average_of_the_weights(tmp_path):
    assert train(tmp_path, "averaged", "--ema-decay", "0.9", "--epochs", "1") == 0
    run = tmp_path / "averaged"
    row = json.loads((run / "metrics.jsonl").read_text())
    assert {"val_error", "val_error_raw"} <= set(row)
    last = load_checkpoint(run / "checkpoints/last.pt")
    best = load_checkpoint(run / "checkpoints/best.pt")  # the last epoch is the only one
    averages = dict(zip(last["model"], last["average"]["averages"], strict=True))
    for name, weight in best["model"].items():
        torch.testing.assert_close(weight, averages[name])
    assert any((last["model"][name] != averages[name]).any() for name in averages)
    assert json.loads((run / "test.json").read_text())["best_val_error"] == row["val_error"]


def test_max_grad_norm_clips_the_step(tiny_run, tmp_path):
    """Plain SGD from the tiny run's weights: clipped to a norm of 1e-7, 16 steps at lr 0.1
    move the weights by at most 1.6e-7 in all; unclipped, by far more."""

    def distance(name: str, *extra: str) -> float:
        sgd = ["--optimizer", "sgd", "--momentum", "0", "--lr", "0.1", "--lr-schedule", "constant"]
        start_from = ["--epochs", "1", "--init-from", str(tiny_run)]
        assert train(tmp_path, name, *start_from, *sgd, *extra) == 0
        start = load_checkpoint(tiny_run / "checkpoints/best.pt")["model"]
        end = load_checkpoint(tmp_path / name / "checkpoints/last.pt")["model"]
        return sum(float((end[k].double() - start[k].double()).norm() ** 2) for k in start) ** 0.5

    assert distance("clipped", "--max-grad-norm", "1e-7") < 1e-5
    assert distance("unclipped") > 1e-2


def test_resume_refuses_settings_that_would_change_what_the_run_learns(tiny_run, capsys):
    assert main(["train", "--resume", str(tiny_run), "--epochs", "5", "--seed", "3"]) == 2
    error = paragraph(capsys.readouterr().err)
    assert "--epochs, --seed" in error and "--threads and --device" in error
    assert json.loads((tiny_run / "config.json").read_text())["train"]["epochs"] == 2


def test_a_truncated_checkpoint_gets_a_clear_error(tiny_run, tmp_path):
    damaged = tmp_path / "damaged"
    (damaged / "checkpoints").mkdir(parents=True)
    (damaged / "config.json").write_text((tiny_run / "config.json").read_text())
    data = (tiny_run / "checkpoints/best.pt").read_bytes()
    (damaged / "checkpoints/best.pt").write_bytes(data[: len(data) // 2])
    result = glimpse_cli("eval", str(damaged))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = paragraph(result.stderr)
    assert "best.pt is damaged (truncated or corrupted" in message
    assert "--checkpoint last" in message  # the other checkpoint, not a KeyError later


def test_a_resume_that_cannot_start_leaves_the_run_as_it_was(tiny_run, tmp_path, capsys):
    moved = tmp_path / "moved"  # elsewhere: a resume that starts records the new place
    shutil.copytree(tiny_run, moved)
    (moved / "checkpoints/last.pt").unlink()
    before = (moved / "config.json").read_bytes()
    assert main(["train", "--resume", str(moved), "--no-progress"]) == 2
    assert "last.pt does not exist" in paragraph(capsys.readouterr().err)
    assert (moved / "config.json").read_bytes() == before


def test_a_config_that_does_not_fit_the_checkpoint_gets_a_clear_error(tiny_run, tmp_path):
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    (other / "checkpoints/best.pt").write_bytes((tiny_run / "checkpoints/best.pt").read_bytes())
    config = json.loads((tiny_run / "config.json").read_text())
    config["model"]["hidden_size"] = 64
    (other / "config.json").write_text(json.dumps(config))
    result = glimpse_cli("eval", str(other))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "model settings" in paragraph(result.stderr)


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original_loss = RAMLearner.loss
    calls = {"n": 0}

    def exploding_loss(self, batch_size, progress):
        calls["n"] += 1
        terms = original_loss(self, batch_size, progress)
        if calls["n"] == 20:  # epoch 2
            terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(RAMLearner, "loss", exploding_loss)
    assert train(tmp_path, "nan") == 2
    saved = load_checkpoint(tmp_path / "nan/checkpoints/last.pt")
    assert saved["epoch"] == 1 and all(torch.isfinite(p).all() for p in saved["model"].values())


def test_an_existing_run_is_not_overwritten(tiny_run, capsys):
    assert train(tiny_run.parent, "tiny") == 2
    assert "--resume" in paragraph(capsys.readouterr().err)


def test_unknown_environment_id_is_a_clear_error():
    result = glimpse_cli("train", "ram", "--env", "Glimpse/Nope-v0", "--no-progress")
    assert result.returncode == 2 and "Unknown environment id" in paragraph(result.stderr)


def test_a_short_mnist_training_beats_90_percent(tmp_path):
    """CI-sized: 3 epochs of 25,600 episodes; the glimpse starts at the centre, 2 scales."""
    code = main(
        ["train", "ram", "--env", "Glimpse/MNIST-v0", "--num-scales", "2",
         "--first-location", "centre", "--epochs", "3", "--epoch-size", "25600",
         "--batch-size", "64", "--lr", "3e-3", "--val-size", "1000", "--runs-dir",
         str(tmp_path), "--name", "ci", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    assert json.loads((tmp_path / "ci/test.json").read_text())["test_error"] < 10.0


def test_every_core_on_a_busy_machine_suggests_one_thread(monkeypatch, capsys):
    from glimpse.agents import run_directory

    def readings(*values):  # (machine, this process) CPU seconds at each call
        calls = iter(values)
        monkeypatch.setattr(run_directory, "cpu_seconds", lambda: next(calls))

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    # the load average still counts the build that just ended: not a reason to warn
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    readings((100.0, 5.0), (100.05, 5.04))  # 0.01 s of others' CPU time in 0.2 s
    threads = torch.get_num_threads()
    run_directory.set_threads(0)
    assert capsys.readouterr().err == ""
    assert torch.get_num_threads() == threads  # 0 leaves torch's default alone

    readings((100.0, 5.0), (100.4, 5.05))  # others: 0.35 s in 0.2 s, more than a core
    run_directory.set_threads(0)
    assert "--threads 1" in capsys.readouterr().err
    readings((100.0, 5.0), (100.4, 5.35))  # this process's own work is not others'
    run_directory.set_threads(0)
    assert capsys.readouterr().err == ""
    readings(None, None)  # no /proc (macOS, Windows): no guess
    run_directory.set_threads(0)
    assert capsys.readouterr().err == ""


def test_cpu_seconds_reads_the_machine_and_this_process():
    from glimpse.agents.run_directory import cpu_seconds

    before = cpu_seconds()
    if before is None:
        pytest.skip("no /proc here")
    sum(i * i for i in range(3_000_000))  # some CPU time of this process's own
    after = cpu_seconds()
    assert after is not None and after[1] > before[1] and after[0] >= after[1] > 0


# MNIST-v0 is trained by every agent in the tests above and in tests/test_ppo.py.
OTHER_IDS = sorted(
    i for i in gymnasium.registry if i.startswith("Glimpse/") and i != "Glimpse/MNIST-v0"
)
SMALLEST_BUDGET = {  # one short update of each agent; the episodes are the full ones
    "ram": ["--epochs", "1", "--epoch-size", "128", "--batch-size", "64"],
    "ppo": ["--total-steps", "256", "--n-envs", "8", "--n-steps", "32",
            "--batch-size", "128", "--eval-every", "256"],
}  # fmt: skip
SMALLEST_BUDGET["recurrent-ppo"] = SMALLEST_BUDGET["ppo"]


@pytest.mark.parametrize("agent", SMALLEST_BUDGET)
@pytest.mark.parametrize("env_id", OTHER_IDS)
def test_every_agent_trains_on_every_id_from_the_command_line(
    env_id, agent, image_folder, tmp_path
):
    if "Fashion" in env_id and not (status := check_dataset(FASHION_MNIST)).ok:
        pytest.skip(status.detail)  # the Debian package is not installed
    data = ["--root", image_folder, "--val-size", "2"] if "ImageFolder" in env_id else []
    code = main(
        ["train", agent, "--env", env_id, *SMALLEST_BUDGET[agent], *data,
         "--eval-episodes", "500", "--no-progress", "--runs-dir", str(tmp_path), "--name", "r"]
    )  # fmt: skip
    assert code == 0
    config = json.loads((tmp_path / "r/config.json").read_text())
    assert (config["agent"], config["env_id"]) == (agent, env_id)
    result = json.loads((tmp_path / "r/test.json").read_text())
    trained = result["epochs"] == 1 if agent == "ram" else result["steps"] >= 256
    assert trained and 0.0 <= result["test_error"] <= 100.0
