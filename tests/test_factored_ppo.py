"""PPO with the factored advantage: how it splits GAE's advantage, and that it learns."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from glimpse.agents.factored_ppo import CLASS_COMPONENT, MINIBATCHES, FactoredPPO
from glimpse.agents.ppo import PPOConfig, ValidationCallback, build_model, ppo_env_settings
from glimpse.cli import main
from glimpse.envs.sb3 import make_sb3_env

GLIMPSES, STEP_REWARD, N_STEPS = 3, 0.5, 16


@pytest.fixture(scope="module")
def model() -> FactoredPPO:
    """A factored PPO that has collected two rollouts and not learned from them: the second
    begins one step into its episodes (16 steps = 5 episodes of 3 and 1 step)."""
    settings = ppo_env_settings("ppo", {"glimpses": GLIMPSES, "step_reward": STEP_REWARD})
    env = make_sb3_env("Glimpse/MNIST-v0", 8, seed=0, **settings)
    config = PPOConfig(n_envs=8, n_steps=N_STEPS, batch_size=64, n_epochs=1, advantage="factored")
    model = build_model("ppo", env, config, seed=0, device="cpu", tensorboard=None)
    assert isinstance(model, FactoredPPO)
    model.train = lambda: None  # type: ignore[method-assign]  # collect, do not update
    model.learn(2 * 8 * N_STEPS)
    return model


def test_the_rollout_keeps_each_step_with_its_own_observation_and_reward(model):
    rollout = model.factored_rollout()
    # an episode's last step is where the observation says so: the flat orders agree
    last_step = torch.isclose(rollout["observations"]["step"][:, 0], torch.tensor(2 / GLIMPSES))
    ends = rollout["episode_ends"] == 1
    assert ends.any() and torch.equal(ends, last_step)
    assert torch.equal(rollout["moves"], ~ends)
    # the per-step reward is paid on the other steps, the answer's on the last
    assert set(rollout["rewards"][~ends].tolist()) <= {0.0, STEP_REWARD}
    assert set(rollout["rewards"][ends].tolist()) <= {0.0, 1.0}


def test_the_class_is_judged_by_its_own_reward_and_the_move_by_the_rest_of_gae(model):
    rollout = model.factored_rollout()
    observations, actions = rollout["observations"], rollout["actions"]
    with torch.no_grad():
        _, expected_rewards, class_log_prob, move_log_prob, _ = model.policy.evaluate_factored(
            observations, actions
        )
    assert torch.allclose(rollout["class_advantages"], rollout["rewards"] - expected_rewards)
    split = rollout["class_advantages"] + rollout["move_advantages"]
    assert torch.allclose(split, rollout["advantages"], atol=1e-6)
    # together the two log-probabilities are what SB3 recorded for the whole action
    recorded = model.rollout_buffer.to_torch(
        model.rollout_buffer.swap_and_flatten(model.rollout_buffer.log_probs).reshape(-1)
    )
    assert torch.allclose(rollout["old_class"] + rollout["old_move"], recorded, atol=1e-5)
    # another class changes the class's log-probability only
    other = actions.clone()
    other[:, CLASS_COMPONENT] = (other[:, CLASS_COMPONENT] + 1) % 10
    with torch.no_grad():
        _, _, other_class, other_move, _ = model.policy.evaluate_factored(observations, other)
    assert torch.equal(other_move, move_log_prob)
    assert not torch.allclose(other_class, class_log_prob)


def test_each_step_reads_the_history_of_its_segments_last_step(model):
    rollout = model.factored_rollout()
    history, ends = rollout["observations"]["history_glimpses"], rollout["segment_ends"]
    steps = torch.arange(len(ends))
    slot, time = steps // N_STEPS, steps % N_STEPS  # the flat order: slot by slot, in time
    assert (ends >= steps).all() and torch.equal(ends // N_STEPS, slot)
    # a segment ends where its episode does, or where the rollout does
    assert ((rollout["episode_ends"][ends] == 1) | (ends % N_STEPS == N_STEPS - 1)).all()
    assert (ends[time == N_STEPS - 1] == steps[time == N_STEPS - 1]).all()
    taken = torch.round(rollout["observations"]["step"][:, 0] * GLIMPSES).long() + 1
    assert (taken[time == 0] == 2).all()  # this rollout began one glimpse into each episode
    for i in range(len(ends)):  # the step's history is the start of its segment's last one
        assert torch.equal(history[ends[i], : taken[i]], history[i, : taken[i]])
        assert taken[ends[i]] >= taken[i]


def test_separate_extractors_for_policy_and_value_read_shared_histories_too():
    settings = ppo_env_settings("ppo", {"glimpses": GLIMPSES, "step_reward": STEP_REWARD})
    env = make_sb3_env("Glimpse/MNIST-v0", 4, seed=0, **settings)
    config = PPOConfig(n_envs=4, n_steps=8, batch_size=16, n_epochs=1, advantage="factored",
                       share_features_extractor=False)  # fmt: skip
    separate = build_model("ppo", env, config, seed=0, device="cpu", tensorboard=None)
    separate.train = lambda: None  # type: ignore[method-assign]
    separate.learn(4 * 8)
    rollout = separate.factored_rollout()
    batch = torch.arange(len(rollout["actions"]))
    own = separate.policy.evaluate_factored(rollout["observations"], rollout["actions"])
    with torch.no_grad():
        for a, b in zip(separate._evaluate(rollout, batch), own, strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("minibatches", MINIBATCHES)
def test_minibatches_cover_the_rollout_and_read_each_history_once(model, minibatches):
    model.minibatches = minibatches
    rollout = model.factored_rollout()
    batches = model._minibatches(rollout, shuffle=True)
    order = torch.cat(batches)
    assert torch.equal(order.sort().values, torch.arange(len(order)))
    assert all(len(batch) == 64 for batch in batches)
    segments = rollout["segment_ends"][order]
    if minibatches == "episodes":  # whole segments, each in time order
        changes = int((segments[1:] != segments[:-1]).sum()) + 1
        assert changes == len(segments.unique())
        same = segments[1:] == segments[:-1]
        assert (order[1:][same] == order[:-1][same] + 1).all()
    # what each minibatch's shared histories give is what its steps' own histories give
    observations, actions = rollout["observations"], rollout["actions"]
    with torch.no_grad():
        for batch in batches:
            shared = model._evaluate(rollout, batch)
            own = model.policy.evaluate_factored(
                {key: value[batch] for key, value in observations.items()}, actions[batch]
            )
            for a, b in zip(shared, own, strict=True):
                torch.testing.assert_close(a, b)
    model.minibatches = "steps"


def test_expected_move_credit_replaces_the_later_rewards_by_their_expectation(model):
    plain = model.factored_rollout()
    model.move_credit = "expected"
    try:
        rollout = model.factored_rollout()
    finally:
        model.move_credit = "rewards"
    surprises, ends = rollout["class_advantages"], rollout["segment_ends"]  # r - c(s)
    assert torch.equal(surprises, plain["class_advantages"])
    decay = model.gamma * model.gae_lambda
    for i in range(len(ends)):  # GAE with r_{t+l} = c(s_{t+l}) + surprise_{t+l}, less the luck
        luck = sum(decay ** (j - i) * surprises[j] for j in range(i + 1, int(ends[i]) + 1))
        expected = plain["move_advantages"][i] - luck
        torch.testing.assert_close(rollout["move_advantages"][i], expected)
    assert not torch.allclose(rollout["move_advantages"], plain["move_advantages"])


@pytest.mark.parametrize(("minibatches", "move_credit"), [("steps", "rewards"),
                                                          ("episodes", "expected")])  # fmt: skip
def test_a_ci_sized_factored_run_beats_chance_after_a_resume(
    tmp_path, monkeypatch, minibatches, move_credit
):
    """The easy variant of tests/test_ppo.py with a second glimpse (so there is a move),
    interrupted after its first validation and resumed: the rest trains factored too, with
    the same minibatches and move credit."""
    original = ValidationCallback.validate

    def validate_then_interrupt(self):
        original(self)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(ValidationCallback, "validate", validate_then_interrupt)
    args = ["train", "ppo", "--env", "Glimpse/MNIST-v0", "--glimpses", "2",
            "--first-location", "centre", "--num-scales", "3", "--step-reward", "1",
            "--advantage", "factored", "--total-steps", "12288", "--n-envs", "64",
            "--n-steps", "16", "--batch-size", "256", "--learning-rate", "1e-3",
            "--eval-every", "6144", "--eval-episodes", "500", "--val-size", "1000",
            "--minibatches", minibatches, "--move-credit", move_credit,
            "--threads", "1", "--runs-dir", str(tmp_path), "--name", "easy"]  # fmt: skip
    assert main(args) == 130
    monkeypatch.setattr(ValidationCallback, "validate", original)
    updates = []
    factored_train = FactoredPPO.train
    monkeypatch.setattr(
        FactoredPPO,
        "train",
        lambda self: updates.append((self.minibatches, self.move_credit)) or factored_train(self),
    )
    run = tmp_path / "easy"
    assert main(["train", "--resume", str(run)]) == 0
    # stopped at step 6,144: six more rollouts of 64 x 16
    assert updates == [(minibatches, move_credit)] * 6
    assert json.loads((run / "test.json").read_text())["test_error"] < 40.0  # chance: 90
    assert main(["eval", str(run)]) == 0
    assert main(["viz", str(run), "--n", "2", "--out", str(tmp_path / "t.png")]) == 0


@pytest.mark.parametrize(
    "extra",
    [
        ["recurrent-ppo"],
        ["ppo", "--action-type", "continuous"],
        ["ppo", "--allow-stop"],
    ],
)
def test_the_factored_advantage_is_refused_where_it_does_not_apply(tmp_path, capsys, extra):
    args = ["train", *extra, "--env", "Glimpse/MNIST-v0", "--advantage", "factored",
            "--runs-dir", str(tmp_path), "--name", "bad"]  # fmt: skip
    assert main(args) == 2
    error = " ".join(capsys.readouterr().err.split())  # one message, wrapped
    assert "--advantage factored" in error and error.startswith("glimpse: error:")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("option", [["--minibatches", "episodes"],
                                    ["--move-credit", "expected"]])  # fmt: skip
def test_factored_options_are_refused_without_the_factored_advantage(tmp_path, capsys, option):
    args = ["train", "ppo", "--env", "Glimpse/MNIST-v0", *option,
            "--runs-dir", str(tmp_path), "--name", "bad"]  # fmt: skip
    assert main(args) == 2
    error = " ".join(capsys.readouterr().err.split())  # one message, wrapped
    assert " ".join(option) in error and error.startswith("glimpse: error:")
    assert not (tmp_path / "bad").exists()
