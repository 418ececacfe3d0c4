"""PPO and RecurrentPPO through the command line: run directories, eval, viz, resume, learning."""

from __future__ import annotations

import io
import json
import os
import signal
import zipfile

import numpy as np
import pytest
import torch
from gymnasium import spaces

from glimpse.agents.extractors import GlimpseFeaturesExtractor, GlimpseHistoryExtractor
from glimpse.agents.ppo import PPOConfig, ValidationCallback, load_model, ppo_env_settings
from glimpse.cli import main
from glimpse.envs.sb3 import make_sb3_env

SMALL = [
    "--env", "Glimpse/MNIST-v0", "--n-envs", "16", "--n-steps", "32",
    "--batch-size", "256", "--eval-every", "1024", "--eval-episodes", "500",
    "--val-size", "500",
]  # fmt: skip


@pytest.mark.parametrize("agent", ["ppo", "recurrent-ppo"])
def test_a_short_run_gives_a_run_directory_that_eval_and_viz_accept(agent, tmp_path, capsys):
    args = ["train", agent, *SMALL, "--total-steps", "2048",
            "--head-units", "32", "--no-share-features-extractor",
            "--vf-coef", "0.25"]  # fmt: skip
    assert main([*args, "--runs-dir", str(tmp_path), "--name", "run"]) == 0
    bar = capsys.readouterr().err  # tqdm: env steps, and the validation error once measured
    assert "2.05k/2.05k" in bar and "val_err=" in bar
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "test.json", "checkpoints/best.zip",
                 "checkpoints/last.zip"):  # fmt: skip
        assert (run / name).is_file(), name
    recorded = json.loads((run / "test.json").read_text())["test_error"]
    assert main(["eval", str(run), "--out", str(tmp_path / "eval.json")]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["error"] == pytest.approx(recorded)
    assert main(["viz", str(run), "--n", "2", "--out", str(tmp_path / "t.gif")]) == 0
    assert (tmp_path / "t.npz").is_file()

    # best.zip holds float16 weights and no optimiser moments; last.zip everything, to resume
    best, last = (_zip_entries(run / f"checkpoints/{n}.zip") for n in ("best", "last"))
    weights = torch.load(io.BytesIO(best["policy.pth"]), weights_only=True).values()
    assert {t.dtype for t in weights if t.is_floating_point()} == {torch.float16}
    assert len(best["policy.optimizer.pth"]) < len(last["policy.optimizer.pth"]) / 10
    # both deflated, without the last batch of observations (nothing reads it back)
    for name in ("best", "last"):
        with zipfile.ZipFile(run / f"checkpoints/{name}.zip") as archive:
            assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}
        assert "_last_obs" not in json.loads(_zip_entries(run / f"checkpoints/{name}.zip")["data"])

    # the policy's Adam is the fused one (torch 2.4+), kept when the zip is loaded to resume
    model = _load(run)
    policy = model.policy
    assert policy.optimizer.defaults["fused"] is True
    # the value function got its own glimpse network, and the value loss its weight
    assert policy.vf_features_extractor is not policy.pi_features_extractor
    assert model.vf_coef == 0.25
    # --head-units sizes both hidden layers of the policy and of the value head
    heads = (policy.mlp_extractor.policy_net, policy.mlp_extractor.value_net)
    units = [[layer.out_features for layer in head if hasattr(layer, "out_features")]
             for head in heads]  # fmt: skip
    assert units == [[32, 32], [32, 32]]


def test_continuous_actions_train_on_the_log_likelihood_class_reward(tmp_path):
    args = ["train", "ppo", *SMALL, "--total-steps", "1024",
            "--action-type", "continuous", "--class-reward", "log-likelihood",
            "--score-bound", "5", "--log-std-init", "-1"]  # fmt: skip
    assert main([*args, "--runs-dir", str(tmp_path), "--name", "run"]) == 0
    model = _load(tmp_path / "run")
    assert isinstance(model.action_space, spaces.Box)
    assert np.allclose(model.action_space.high, [1, 1, *[5] * 10])
    assert model.policy.log_std.detach().mean().item() == pytest.approx(-1.0, abs=0.1)
    # the run's environment rewards the log-likelihood: never positive, and not only 0 or 1
    config = json.loads((tmp_path / "run/config.json").read_text())
    env = make_sb3_env(None, 8, seed=0, **ppo_env_settings("ppo", config["env"]))
    observations = env.reset()
    rewards = []
    for _ in range(6):
        observations, reward, *_ = env.step(model.predict(observations)[0])
        rewards.append(reward)
    assert (np.array(rewards) <= 0).all() and len(np.unique(rewards)) > 2
    assert main(["eval", str(tmp_path / "run")]) == 0


def _load(run, checkpoint: str = "last", device: str = "auto"):
    """The SB3 model of a run's checkpoint, built from the run's own config.json."""
    config = json.loads((run / "config.json").read_text())
    path = run / f"checkpoints/{checkpoint}.zip"
    return load_model(config["agent"], PPOConfig(**config["model"]), config["env"], path, device)


def _zip_entries(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_a_ci_sized_ppo_run_beats_chance_by_a_clear_margin(tmp_path):
    """The easy variant: one glimpse at the centre whose coarsest scale sees the whole digit."""
    code = main(
        ["train", "ppo", "--env", "Glimpse/MNIST-v0", "--glimpses", "1",
         "--first-location", "centre", "--num-scales", "3", "--total-steps", "20000",
         "--n-envs", "64", "--n-steps", "16", "--batch-size", "256",
         "--learning-rate", "1e-3", "--eval-every", "10000", "--eval-episodes", "500",
         "--val-size", "1000", "--runs-dir", str(tmp_path), "--name", "easy"]
    )  # fmt: skip
    assert code == 0
    assert json.loads((tmp_path / "easy/test.json").read_text())["test_error"] < 40.0  # chance: 90


def test_resume_continues_from_the_saved_step_count(tmp_path, monkeypatch):
    original = ValidationCallback.validate

    def validate_then_interrupt(self):
        original(self)
        os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends; Ctrl-C takes this path too

    monkeypatch.setattr(ValidationCallback, "validate", validate_then_interrupt)
    args = ["train", "ppo", *SMALL, "--total-steps", "3072",
            "--learning-rate", "1e-3", "--lr-schedule", "linear"]  # fmt: skip
    assert main([*args, "--runs-dir", str(tmp_path), "--name", "run"]) == 130
    monkeypatch.setattr(ValidationCallback, "validate", original)
    # The best validation error so far comes from metrics.jsonl: recorded as 0 here, no later
    # validation beats it, so the resumed run must keep the best model it had.
    metrics = tmp_path / "run/metrics.jsonl"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "val_error": 0.0}) + "\n")
    best = (tmp_path / "run/checkpoints/best.zip").read_bytes()
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run/checkpoints/best.zip").read_bytes() == best
    assert json.loads((tmp_path / "run/test.json").read_text())["best_val_error"] == 0.0
    steps = [json.loads(line)["steps"] for line in
             (tmp_path / "run/metrics.jsonl").read_text().splitlines()]  # fmt: skip
    assert steps[0] == 1024 and steps[1:] == [2048, 3072]  # no step counted twice
    assert json.loads((tmp_path / "run/test.json").read_text())["steps"] == 3072
    # The learning-rate decay survives the zip and counts the steps before the interruption:
    # the last update (after the rollout that began at step 2560 of 3072) used 1e-3 * 512/3072;
    # a schedule restarted at the resume would have used 1e-3 * 512/2048.
    model = _load(tmp_path / "run", device="cpu")
    assert model.learning_rate(0.5) == pytest.approx(5e-4)
    assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 512 / 3072)


def test_glimpse_scales_sum_reads_each_scale_times_its_area(tmp_path, capsys):
    """--glimpse-scales sum: the extractors see scale k multiplied by s^2k (one lit pixel reads
    1 at every scale); the option reaches the policy of either agent, and a screen policy, which
    has no glimpse network, refuses it."""
    space = spaces.Dict({
        "glimpse": spaces.Box(0, 1, (3, 1, 2, 2), np.float32),
        "location": spaces.Box(-1, 1, (2,), np.float32),
        "step": spaces.Box(0, 1, (1,), np.float32),
    })  # fmt: skip
    mean, summed = (GlimpseFeaturesExtractor(space, 8, scale_gain=gain) for gain in (1.0, 4.0))
    summed.load_state_dict(mean.state_dict())
    obs = {k: torch.as_tensor(v.sample())[None] for k, v in space.spaces.items()}
    scaled = dict(obs, glimpse=obs["glimpse"] * torch.tensor([1.0, 4.0, 16.0]).view(3, 1, 1, 1))
    assert torch.allclose(summed(obs), mean(scaled))
    assert not torch.allclose(summed(obs), mean(obs))
    history = spaces.Dict({
        **space.spaces,
        "history_glimpses": spaces.Box(0, 1, (4, 3, 1, 2, 2), np.float32),
        "history_locations": spaces.Box(-1, 1, (4, 2), np.float32),
    })  # fmt: skip
    mean, summed = (GlimpseHistoryExtractor(history, 8, scale_gain=gain) for gain in (1.0, 4.0))
    summed.load_state_dict(mean.state_dict())
    obs = {k: torch.as_tensor(v.sample())[None] for k, v in history.spaces.items()}
    obs["step"] = torch.tensor([[0.5]])  # three glimpses taken
    gains = torch.tensor([1.0, 4.0, 16.0]).view(3, 1, 1, 1)
    scaled = dict(obs, history_glimpses=obs["history_glimpses"] * gains)
    assert torch.allclose(summed(obs), mean(scaled))
    assert not torch.allclose(summed(obs), mean(obs))
    for agent in ("ppo", "recurrent-ppo"):
        args = ["train", agent, *SMALL, "--total-steps", "1024", "--num-scales", "2",
                "--scale-factor", "3", "--glimpse-scales", "sum", "--runs-dir", str(tmp_path),
                "--name", agent, "--no-progress"]  # fmt: skip
        assert main(args) == 0
        extractor = _load(tmp_path / agent).policy.features_extractor
        assert extractor.gains.flatten().tolist() == [1.0, 9.0]
    screen = ["train", "recurrent-ppo", "--env", "Glimpse/Catch-v0", "--screen", "--glimpse-scales",
              "sum", "--runs-dir", str(tmp_path), "--name", "screen"]  # fmt: skip
    assert main(screen) == 2 and "leave --glimpse-scales out" in capsys.readouterr().err
    assert not (tmp_path / "screen").exists()


@pytest.mark.parametrize("pooling", GlimpseHistoryExtractor.POOLINGS)
def test_history_extractor_pools_only_the_glimpses_taken(pooling):
    horizon = 4
    space = spaces.Dict({
        "glimpse": spaces.Box(0, 1, (1, 1, 2, 2), np.float32),
        "location": spaces.Box(-1, 1, (2,), np.float32),
        "step": spaces.Box(0, 1, (1,), np.float32),
        "history_glimpses": spaces.Box(0, 1, (horizon, 1, 1, 2, 2), np.float32),
        "history_locations": spaces.Box(-1, 1, (horizon, 2), np.float32),
    })  # fmt: skip
    extractor = GlimpseHistoryExtractor(space, features_dim=8, pooling=pooling)
    obs = {k: torch.as_tensor(v.sample())[None] for k, v in space.spaces.items()}
    obs["step"] = torch.tensor([[1 / horizon]])  # two glimpses taken
    before = extractor(obs)
    obs["history_glimpses"][0, 2:] = torch.rand(2, 1, 1, 2, 2)  # slots not yet taken
    assert torch.equal(extractor(obs), before)
    obs["history_glimpses"][0, 1] = torch.rand(1, 1, 2, 2)  # a slot that was taken
    assert not torch.equal(extractor(obs), before)


@pytest.mark.parametrize("pooling", GlimpseHistoryExtractor.POOLINGS)
def test_history_extractor_gives_each_row_of_a_mixed_batch_its_own_features(pooling):
    # A PPO minibatch mixes steps: one row after 1 glimpse, one after 3 (rnn runs its core
    # only as far as the longest history in the batch).
    env = make_sb3_env("Glimpse/MNIST-v0", num_envs=2, seed=0, history=True)
    extractor = GlimpseHistoryExtractor(env.observation_space, features_dim=8, pooling=pooling)
    first = {key: torch.as_tensor(value) for key, value in env.reset().items()}
    for _ in range(2):
        later, *_ = env.step(np.array([env.action_space.sample() for _ in range(2)]))
    later = {key: torch.as_tensor(value) for key, value in later.items()}
    mixed = {key: torch.cat([first[key][:1], later[key][1:]]) for key in first}
    alone = torch.cat([extractor({k: v[:1] for k, v in first.items()}),
                       extractor({k: v[1:] for k, v in later.items()})])  # fmt: skip
    torch.testing.assert_close(extractor(mixed), alone)


@pytest.mark.parametrize("pooling", GlimpseHistoryExtractor.POOLINGS)
def test_history_extractor_reads_the_steps_of_an_episode_from_its_last_history(pooling):
    # Every step of 2 episodes, each as its own observation, against the same steps reading
    # their episode's last history up to their own step: the same features, and gradients.
    env = make_sb3_env("Glimpse/MNIST-v0", num_envs=2, seed=0, history=True)
    extractor = GlimpseHistoryExtractor(env.observation_space, features_dim=8, pooling=pooling)
    steps = [env.reset()]
    for _ in range(env.observation_space["history_glimpses"].shape[0] - 1):
        steps.append(env.step(np.array([env.action_space.sample() for _ in range(2)]))[0])
    each = {key: torch.as_tensor(np.concatenate([s[key] for s in steps])) for key in steps[0]}
    horizon = len(steps)  # rows: step 0 of both episodes, then step 1 of both, ...
    source = torch.arange(2).repeat(horizon)  # the episode of each row
    last = {key: value[-2:] for key, value in each.items()}  # both episodes' last step
    alone = extractor(each)
    shared = extractor.from_histories(
        last["history_glimpses"], last["history_locations"], each["step"], source
    )
    torch.testing.assert_close(shared, alone)
    weights = extractor.network.what.weight
    grad_alone = torch.autograd.grad(alone.square().sum(), weights)[0]
    grad_shared = torch.autograd.grad(shared.square().sum(), weights)[0]
    torch.testing.assert_close(grad_shared, grad_alone)


def _after_three_glimpses(pooling: str):
    """An extractor of 8 units, the observations of 4 episodes after their third glimpse, and
    the glimpse network's features of those three glimpses, (4, 3, 8)."""
    env = make_sb3_env("Glimpse/MNIST-v0", num_envs=4, seed=0, history=True)
    extractor = GlimpseHistoryExtractor(env.observation_space, features_dim=8, pooling=pooling)
    observations = env.reset()
    for _ in range(2):
        observations, *_ = env.step(np.array([env.action_space.sample() for _ in range(4)]))
    obs = {key: torch.as_tensor(value) for key, value in observations.items()}
    glimpses, locations = obs["history_glimpses"][:, :3], obs["history_locations"][:, :3]
    seen = extractor.network(glimpses.flatten(0, 1), locations.flatten(0, 1)).view(4, 3, -1)
    return extractor, obs, seen


def _first_two_swapped(obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    order = [1, 0, *range(2, obs["history_glimpses"].shape[1])]
    return {**obs, "history_glimpses": obs["history_glimpses"][:, order],
            "history_locations": obs["history_locations"][:, order]}  # fmt: skip


@pytest.mark.parametrize(
    ("pooling", "pool"), [("mean", lambda seen: seen.mean(1)), ("max", lambda seen: seen.amax(1))]
)
def test_history_extractor_mixes_current_glimpse_pooled_seen_and_step(pooling, pool):
    extractor, obs, seen = _after_three_glimpses(pooling)
    current = extractor.network(obs["glimpse"], obs["location"])
    expected = torch.relu(extractor.mix(torch.cat([current, pool(seen), obs["step"]], dim=1)))
    torch.testing.assert_close(extractor(obs), expected)
    # The first two glimpses in the other order: a mean or a maximum cannot tell.
    torch.testing.assert_close(extractor(_first_two_swapped(obs)), extractor(obs))


def test_history_extractor_concat_gives_each_slot_its_own_weights():
    extractor, obs, seen = _after_three_glimpses("concat")
    slots = torch.cat([seen.flatten(1), seen.new_zeros(4, 8 * (extractor.horizon - 3))], dim=1)
    expected = torch.relu(extractor.mix(torch.cat([seen[:, 2], slots, obs["step"]], dim=1)))
    torch.testing.assert_close(extractor(obs), expected)
    assert not torch.allclose(extractor(_first_two_swapped(obs)), extractor(obs))


def test_history_extractor_refuses_an_unknown_pooling():
    space = make_sb3_env("Glimpse/MNIST-v0", num_envs=1, history=True).observation_space
    with pytest.raises(ValueError, match="pooling must be one of"):
        GlimpseHistoryExtractor(space, pooling="median")


def test_history_extractor_rnn_runs_the_papers_core_over_the_glimpses_in_order():
    extractor, obs, seen = _after_three_glimpses("rnn")
    core = extractor.core
    h = torch.zeros(4, 8)
    for i in range(3):  # h_i = ReLU(W_hh h_{i-1} + W_gh g_i)
        h = torch.relu(seen[:, i] @ core.weight_ih_l0.T + core.bias_ih_l0
                       + h @ core.weight_hh_l0.T + core.bias_hh_l0)  # fmt: skip
    expected = torch.relu(extractor.mix(torch.cat([seen[:, 2], h, obs["step"]], dim=1)))
    torch.testing.assert_close(extractor(obs), expected)
    assert not torch.allclose(extractor(_first_two_swapped(obs)), extractor(obs))


def test_compare_measures_a_ppo_policy_through_the_environment(tmp_path):
    from glimpse.agents.compare import compare
    from glimpse.agents.recipes import Recipe

    args = ["train", "ppo", *SMALL, "--total-steps", "1024", "--head-units", "16",
            "--runs-dir", str(tmp_path), "--name", "tiny-ppo-seed1", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    recipe = Recipe("tiny-ppo", "ppo", "Glimpse/MNIST-v0", runs=("tiny-ppo-seed1",))
    compare([recipe], tmp_path / "report", results_dir=tmp_path, scaling_sizes=(60,))
    (row,) = json.loads((tmp_path / "report" / "results.json").read_text())["rows"]
    recorded = json.loads((tmp_path / "tiny-ppo-seed1" / "test.json").read_text())
    assert row["errors"] == [recorded["test_error"]] and row["steps"] == recorded["steps"]
    assert row["epochs"] is None and row["flops"] > 0 and 0 < row["pixels"] <= 28 * 28
    assert len(row["on_target"]["per_step"]) == 6  # MNIST-v0: 6 glimpses
    text = (tmp_path / "report" / "report.md").read_text()
    assert "hard: PPO policy" in text and "M steps" in text
