"""RAM's in-model inference path: the same answers and locations as the environment's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glimpse.agents.learners import RAMLearner
from glimpse.agents.ram import RAMConfig, RAMPredictor
from glimpse.agents.runs import load_predictor
from glimpse.envs.evaluation import evaluate, first_locations
from glimpse.errors import ConfigError


def learner(settings: dict, seed: int = 0) -> RAMLearner:
    return RAMLearner(settings, RAMConfig(), 16, seed, torch.device("cpu"), eval_episodes=50)


@pytest.mark.parametrize("first", ["random", "centre"])
def test_predictor_equals_the_environment_path_answer_by_answer_and_look_by_look(first):
    settings = {"task": "cluttered", "size": 60, "glimpses": 5, "glimpse_size": 12,
                "num_scales": 3, "val_size": 120, "first_location": first}  # fmt: skip
    ram = learner(settings)
    with torch.no_grad():  # an untrained model looks everywhere: perturb it to look around
        ram.model.locator.mean.weight.normal_(0.0, 0.3)
    episodes = ram._eval.setdefault("val", ram_episodes(ram))
    through_env = evaluate(ram.policy(), episodes)
    in_model, _ = ram.evaluate("val")  # the predictor's path
    np.testing.assert_array_equal(in_model.predictions, through_env.predictions)
    np.testing.assert_array_equal(in_model.locations, through_env.locations)
    np.testing.assert_array_equal(in_model.scores, through_env.scores)
    assert len(in_model.labels) == 120 and (in_model.labels == through_env.labels).all()
    moves = np.abs(np.diff(in_model.locations, axis=1)).sum(axis=2)
    assert (moves > 0.05).mean() > 0.5  # the test compares real trajectories
    if first == "centre":
        assert (in_model.locations[:, 0] == 0).all()


def ram_episodes(ram: RAMLearner):
    from glimpse.envs.evaluation import evaluation_episodes

    return evaluation_episodes(ram.env_settings, "val", ram.eval_episodes)


def test_first_locations_are_where_the_environment_evaluation_starts():
    ram = learner({"task": "translated", "size": 60, "glimpses": 2, "val_size": 70})
    episodes = ram_episodes(ram)  # 50 slots: a full round, then 20 of a second
    result = evaluate(ram.policy(), episodes, seed=3)
    np.testing.assert_array_equal(first_locations(episodes, seed=3), result.locations[:, 0])


def test_predict_takes_images_of_any_layout_and_starts_where_it_is_told():
    ram = learner({"task": "mnist", "glimpses": 3, "val_size": 10})
    predictor = ram.predictor()
    images = ram.task.fixed_canvases("val").images[:4]  # (4, 1, 28, 28) uint8, read-only
    start = np.array([[0.0, 0.0], [0.5, -0.5], [-1.0, 1.0], [0.25, 0.25]], np.float32)
    classes, locations = predictor.predict(images, start)
    assert classes.shape == (4,) and locations.shape == (4, 3, 2)
    torch.testing.assert_close(locations[:, 0], torch.from_numpy(start))
    same, _ = predictor.predict(torch.from_numpy(images[:, 0].copy()), start)  # (B, H, W)
    assert torch.equal(same, classes)
    floats, _ = predictor.predict(images.astype(np.float32) / 255.0, start)  # 0..1 floats
    assert torch.equal(floats, classes)
    _, random_start = predictor.predict(images, generator=torch.Generator().manual_seed(0))
    assert random_start[:, 0].abs().max() <= 1 and len(set(random_start[:, 0, 0].tolist())) == 4


def test_load_predictor_reads_a_ram_run_and_refuses_others(tmp_path):
    from glimpse.cli import main

    common = ["--env", "Glimpse/MNIST-v0", "--epochs", "1", "--epoch-size", "64",
              "--val-size", "100", "--runs-dir", str(tmp_path), "--no-progress"]  # fmt: skip
    assert main(["train", "ram", *common, "--name", "ram"]) == 0
    assert main(["train", "fc", *common, "--name", "fc"]) == 0
    predictor = load_predictor(tmp_path / "ram")
    classes, locations = predictor.predict(np.zeros((2, 28, 28), np.uint8))
    assert classes.shape == (2,) and locations.shape == (2, 6, 2)
    with pytest.raises(ConfigError, match=r"fc run.*load_agent"):
        load_predictor(tmp_path / "fc")


@pytest.mark.parametrize("locator_units", [0, 16])
@pytest.mark.parametrize(("batch", "size"), [(1, 60), (2, 60), (1, 200), (2, 200)])
def test_the_compiled_episode_of_a_few_images_equals_the_environment_path(
    batch, size, locator_units
):
    """A batch of few images runs the TorchScript episode: the same numbers as the
    environment's path and as the predictor's own eager loop, whether the glimpses are read
    from the canvas's table (60 x 60) or from its pixels (200 x 200)."""
    from glimpse.agents.ram import RAM, RAMPolicy, compiled_episode
    from glimpse.envs.glimpse_env import make_episodes

    assert compiled_episode() is not None  # the torch we test with compiles it
    settings = {"task": "cluttered", "size": size, "glimpses": 8, "glimpse_size": 12,
                "num_scales": 3, "action_type": "continuous"}  # fmt: skip
    episodes = make_episodes(batch, "train", False, settings)
    sources = []  # which source the predictor reads: the table at 60 px, the pixels at 200
    frame = episodes.sensor.frame

    def framed_and_noted(*args: object) -> object:
        framed = frame(*args)
        sources.append(framed.from_pixels)
        return framed

    episodes.sensor.frame = framed_and_noted
    torch.manual_seed(batch)
    model = RAM(episodes.glimpse_shape, 10, RAMConfig(locator_units=locator_units)).eval()
    with torch.no_grad():
        model.locator.mean.weight.normal_(0.0, 0.5)
    predictor = RAMPredictor(model, episodes.sensor, 8)
    policy = RAMPolicy(model, 8, torch.device("cpu"))
    for key in range(10):
        episodes.seed(np.arange(key, key + batch, dtype=np.uint64))
        episodes.reset(np.ones(batch, bool))
        canvases, first = episodes.canvases.copy(), episodes.locations.copy()
        policy.start(batch)
        for _ in range(8):
            action = policy.act(episodes.observations())
            _, _, infos = episodes.step(action)
        compiled = predictor.episode(canvases, first)
        predictor.compile = False
        eager = predictor.episode(canvases, first)
        predictor.compile = True
        np.testing.assert_array_equal(compiled[1].numpy(), infos["locations"])
        np.testing.assert_array_equal(compiled[0].numpy(), action[:, 2:])
        assert torch.equal(compiled[0], eager[0]) and torch.equal(compiled[1], eager[1])
    assert sources == [size == 200] * 20


def test_told_locations_replace_the_learned_ones_and_nothing_else():
    settings = {"task": "cluttered", "size": 60, "glimpses": 4, "num_scales": 2, "val_size": 60}
    ram = learner(settings)
    with torch.no_grad():
        ram.model.locator.mean.weight.normal_(0.0, 0.3)
    images = ram.task.fixed_canvases("val").images[:7]
    predictor = ram.predictor()
    log_probs, learned = predictor.episode(images, torch.zeros(7, 2))
    again, told = predictor.episode(images, locations=learned)  # told where it went anyway
    torch.testing.assert_close(again, log_probs, rtol=0, atol=0)
    assert torch.equal(told, learned)
    _, fixed = predictor.episode(images, locations=learned[0])  # one sequence for every image
    assert torch.equal(fixed, learned[:1].expand(7, 4, 2))
    for wrong in (torch.zeros(3, 2), torch.zeros(5, 4, 2)):  # wrong length; 5 paths, 7 images
        with pytest.raises(ConfigError, match=r"one \(x, y\) per glimpse"):
            predictor.episode(images, locations=wrong)
    elsewhere = learned.flip(0)  # other images' paths: the glimpses read there, by hand
    scores, _ = predictor.episode(images, locations=elsewhere)
    table = predictor.sensor.integral(torch.from_numpy(images.copy()))
    model, state = ram.model, None
    with torch.no_grad():
        for t in range(4):
            glimpse = predictor.sensor.read(table, elsewhere[:, t]).flatten(1)
            state = model.core(model.glimpse_network(glimpse, elsewhere[:, t]), state)
        torch.testing.assert_close(scores, model.classifier(state[0]))
    random = ram.evaluate_locations("val", "random")
    assert random.locations.shape == (60, 4, 2) and np.abs(random.locations).max() <= 1
    assert np.array_equal(random.locations, ram.evaluate_locations("val", "random").locations)
    fixed_run = ram.evaluate_locations("val", "fixed")
    mean = ram.evaluate("val")[0].locations.mean(axis=0)  # its own mean path on validation
    np.testing.assert_allclose(fixed_run.locations, np.broadcast_to(mean, (60, 4, 2)))


@pytest.mark.parametrize("core", ["rnn", "lstm"])
def test_the_predictor_runs_the_convolutional_glimpse_network_as_the_environment_does(core):
    settings = {"task": "cluttered", "size": 60, "glimpses": 4, "glimpse_size": 12,
                "num_scales": 3, "val_size": 40}  # fmt: skip
    config = RAMConfig(glimpse_encoder="conv", core=core)
    ram = RAMLearner(settings, config, 8, 0, torch.device("cpu"), eval_episodes=40)
    with torch.no_grad():
        ram.model.locator.mean.weight.normal_(0.0, 0.3)
    through_env = evaluate(ram.policy(), ram_episodes(ram))
    in_model, _ = ram.evaluate("val")
    np.testing.assert_array_equal(in_model.predictions, through_env.predictions)
    np.testing.assert_array_equal(in_model.locations, through_env.locations)
