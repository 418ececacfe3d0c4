"""Catch: the game's rules, a scene that changes under the glimpse, and its clear errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import glimpse  # noqa: F401  (registers the ids)
from glimpse.catch import Catch
from glimpse.envs.evaluation import evaluate, evaluation_episodes
from glimpse.errors import ConfigError
from glimpse.tasks import TaskConfig, make_task

CATCH = {"task": "catch", "glimpses": 23, "glimpse_size": 6, "num_scales": 3}


def game(size: int = 24) -> Catch:
    task = make_task(TaskConfig(task="catch", size=size))
    assert isinstance(task, Catch)
    return task


def test_the_ball_falls_bounces_and_the_paddle_moves_within_the_walls():
    catch = game()
    assert catch.steps == 23 and game(64).steps == 31 and game(64).unit == 2
    state = np.array([[0.5, -1.0, 0.0, 0.0], [22.5, 1.0, 5.0, 22.0]])  # x, vx, y, paddle
    after = catch.advance(state, np.array([0, 2]))  # left at the left wall, right at the right
    np.testing.assert_allclose(after, [[0.5, 1.0, 1.0, 0.0], [22.5, -1.0, 6.0, 22.0]])
    moved = catch.advance(np.array([[10.0, 0.0, 3.0, 11.0]] * 3), np.array([0, 1, 2]))
    assert moved[:, 3].tolist() == [10.0, 11.0, 12.0]
    screen = catch.draw(np.array([[3.4, 0.0, 7.0, 11.0]]))[0, 0]
    assert screen[7, 3] == 255 and screen[23, 11] == screen[23, 12] == 255
    assert (screen > 0).sum() == 3  # one ball pixel, two paddle pixels


def test_a_player_who_knows_the_landing_column_always_catches_and_staying_rarely_does():
    vec = gym.make_vec("Glimpse/Catch-v0", num_envs=200, split="test")
    episodes = vec.unwrapped.episodes
    catch = episodes.task
    rates = {}
    for player in ("knows", "stays"):
        vec.reset(seed=0)
        for _ in range(catch.steps):
            landing = episodes.scene.copy()
            for _ in range(catch.steps - int(landing[0, 2])):
                landing = catch.advance(landing, np.ones(len(landing), np.int64))
            target = landing[:, 0] - 0.5  # put the paddle's two pixels under the ball
            moves = 1 + np.sign(target - episodes.scene[:, 3]).astype(np.int64)
            moves = moves if player == "knows" else np.ones(200, np.int64)
            before = episodes.canvases.copy()
            _, rewards, terminated, _, info = vec.step(np.stack([np.full(200, 4),
                                                                 np.full(200, 4), moves], 1))
            assert not np.array_equal(before, episodes.canvases)  # the screen changed
        assert terminated.all() and np.array_equal(rewards, info["is_success"])
        assert "label" not in info  # a game names no class
        rates[player] = rewards.mean()
    assert rates["knows"] == 1.0 and rates["stays"] < 0.2


def test_the_glimpse_reads_the_new_screen_and_the_target_box_is_the_ball():
    env = gym.make("Glimpse/Catch-v0")
    env.reset(seed=3)
    episodes = env.unwrapped.episodes
    for _ in range(5):
        observation, *_ = env.step(np.array([4, 4, 1]))
    expected = episodes.sensor.extract_numpy(episodes.canvases, episodes.locations)[0]
    np.testing.assert_array_equal(observation["glimpse"], expected)
    for _ in range(episodes.task.steps - 5):
        *_, terminated, _, info = env.step(np.array([4, 4, 1]))
    top, left, bottom, right = info["target_box"]
    assert terminated and (top, bottom) == (23, 24) and right - left == 1
    assert episodes.canvases[0, 0, top, left] == 255


def test_evaluation_counts_catches_on_fixed_test_games():
    class Stay:
        def start(self, num_envs):
            self.n = num_envs

        def act(self, observations):
            return np.tile([4, 4, 1], (self.n, 1))

    settings = {**CATCH, "val_size": 300}
    first = evaluate(Stay(), evaluation_episodes(settings, "val", 100))
    again = evaluate(Stay(), evaluation_episodes(settings, "val", 64))
    assert len(first.successes) == 300 and (first.labels == -1).all()
    np.testing.assert_array_equal(first.successes, again.successes)  # the same fixed games
    assert 0 < first.accuracy < 0.2


@pytest.mark.parametrize(
    ("settings", "match"),
    [({"glimpses": 8}, "lasts 23 steps: pass glimpses=23"),
     ({"allow_stop": True}, "rewards a catch at the end"),
     ({"size": 20, "glimpses": 19}, "at least 24 pixels"),
     ({"distractors": 3}, "does nothing for the catch task")],
)  # fmt: skip
def test_bad_catch_settings_are_clear_errors(settings, match):
    with pytest.raises(ConfigError, match=match):
        gym.make("Glimpse/Catch-v0", **settings)


def test_trajectories_of_a_game_keep_the_screen_of_every_glimpse(tmp_path):
    from glimpse.agents.visualise import draw_trajectories
    from glimpse.envs.evaluation import Trajectories, record_trajectories

    class Stay:
        def start(self, num_envs):
            self.n = num_envs

        def act(self, observations):
            return np.tile([4, 4, 1], (self.n, 1))

    recorded = record_trajectories(Stay(), evaluation_episodes(CATCH, "test", 3))
    assert recorded.canvases.shape == (3, 23, 1, 24, 24)  # a screen per glimpse
    balls = [np.argwhere(recorded.frame(0, t)[0, :23] == 255)[0] for t in (0, 1, 22)]
    assert [row for row, _ in balls] == [0, 1, 22]  # the ball falls a row a step
    assert (recorded.labels == -1).all() and recorded.successes.dtype == bool
    recorded.save(tmp_path / "t.npz")
    again = Trajectories.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(again.canvases, recorded.canvases)
    draw_trajectories(again, tmp_path / "t.gif")
    from PIL import Image

    with Image.open(tmp_path / "t.gif") as gif:
        assert gif.n_frames == 23


@pytest.mark.parametrize("agent", ["soft", "deep-cnn"])
def test_agents_that_name_a_class_refuse_the_game_and_name_those_that_play_it(
    agent, tmp_path, capsys
):
    from glimpse.cli import main

    command = ["train", agent, "--env", "Glimpse/Catch-v0", "--runs-dir", str(tmp_path)]
    assert main(command) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "does not play Catch" in error and "ram, ppo, recurrent-ppo" in error
    assert not any(tmp_path.iterdir())  # nothing made


def test_a_gaze_that_follows_the_ball_is_counted_on_the_ball_at_every_glimpse():
    from glimpse.sensor import GlimpseSensor

    settings = {**CATCH, "action_type": "continuous", "val_size": 100}
    episodes = evaluation_episodes(settings, "val", 50)
    catch = episodes.task

    class Follow:  # looks where the ball will be when the next glimpse is read
        def start(self, num_envs):
            pass

        def act(self, observations):
            ball = catch.ball_boxes(catch.advance(episodes.scene, np.ones(50, np.int64)))
            centre = (ball[:, [1, 0]] + 0.5) * 2 / catch.canvas_size - 1  # (x, y)
            return np.concatenate([centre, np.zeros((50, 3))], axis=1)

    result = evaluate(Follow(), episodes)
    assert result.target_boxes.shape == (100, 23, 4)
    assert not np.array_equal(result.target_boxes[:, 0], result.target_boxes[:, -1])  # it fell
    share = result.target_share(GlimpseSensor(6, 3, 2), 24, 24)
    assert share.per_step[1:] == [100.0] * 22 and share.last == 100.0


def ram_in_a_game(config=None, batch: int = 16):
    import torch

    from glimpse.agents.ram import RAM, RAMConfig
    from glimpse.envs.glimpse_env import make_episodes

    torch.manual_seed(0)
    episodes = make_episodes(batch, "train", False, {**CATCH, "action_type": "continuous"})
    episodes.seed(np.arange(batch, dtype=np.uint64))
    model = RAM(episodes.glimpse_shape, 3, config or RAMConfig(core="lstm", hidden_size=32))
    return model, episodes


def test_ram_in_a_game_plays_the_moves_it_sampled_and_is_paid_for_the_catch():
    import torch

    from glimpse.agents.ram import game_loss

    model, episodes = ram_in_a_game()
    with torch.no_grad():  # an action network that always moves left
        model.classifier.linear.weight.zero_()
        model.classifier.linear.bias.copy_(torch.tensor([30.0, 0.0, 0.0]))
    batch = model(episodes)
    assert batch.move_log_pi.shape == (16, 23) and batch.log_pi.shape == (16, 22)
    assert batch.baselines.shape == (16, 23)  # one per move
    assert (episodes.scene[:, 3] == 0).all()  # the paddle went left, to the wall
    catches = episodes.task.caught(episodes.scene)
    np.testing.assert_array_equal(batch.rewards.numpy(), catches)
    assert torch.allclose(batch.move_log_pi, torch.zeros(()), atol=1e-6)  # log 1
    terms = game_loss(batch)
    assert set(terms) == {"total", "moves", "baseline", "reinforce", "entropy"}
    assert terms["entropy"].item() < 1e-6  # a certain move


def test_in_a_game_reinforce_on_the_moves_trains_the_core_and_the_action_network():
    from glimpse.agents.ram import game_loss

    model, episodes = ram_in_a_game()
    batch = model(episodes)
    batch.rewards[:8] = 1.0 - batch.rewards[:8]  # a non-zero advantage whatever was caught
    game_loss(batch)["moves"].backward()
    trained = {name for name, p in model.named_parameters() if p.grad is not None and
               p.grad.abs().sum() > 0}  # fmt: skip
    assert any(name.startswith("classifier.") for name in trained)
    assert any(name.startswith("core.") for name in trained)
    assert any(name.startswith("glimpse_network.") for name in trained)
    assert not any(name.startswith(("locator.", "baseliner.")) for name in trained)


def test_the_game_loss_is_reinforce_against_the_baseline_written_out():
    import torch

    from glimpse.agents.ram import Rollout, game_loss

    torch.manual_seed(0)
    moves, looks, baselines = torch.randn(4, 3), torch.randn(4, 2), torch.rand(4, 3)
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    entropy = torch.rand(4, 3)
    batch = Rollout(torch.zeros(4, 3), torch.full((4,), -1), rewards, looks, baselines,
                    move_log_pi=moves, move_entropy=entropy)  # fmt: skip
    advantage = rewards[:, None] - baselines
    terms = game_loss(batch, reinforce_weight=0.5)
    torch.testing.assert_close(terms["moves"], -(moves * advantage).sum(1).mean())
    torch.testing.assert_close(terms["reinforce"], -(looks * advantage[:, :2]).sum(1).mean())
    torch.testing.assert_close(terms["baseline"], (advantage**2).sum(1).mean())
    torch.testing.assert_close(
        terms["total"], terms["moves"] + terms["baseline"] + 0.5 * terms["reinforce"])
    explored = game_loss(batch, reinforce_weight=0.5, entropy_weight=0.1)
    torch.testing.assert_close(explored["total"], terms["total"] - 0.1 * entropy.sum(1).mean())
    paired = game_loss(batch, rollouts_per_image=2)  # games 0, 1 alike, and 2, 3
    others = torch.tensor([0.0, 1.0, 1.0, 0.0])[:, None]
    paired_advantage = rewards[:, None] - others
    torch.testing.assert_close(paired["moves"], -(moves * paired_advantage).sum(1).mean())


def test_ram_learner_plays_the_fixed_games_through_the_environment_and_refuses_still_options():
    import torch

    from glimpse.agents.learners import RAMLearner
    from glimpse.agents.ram import RAMConfig

    settings = {**CATCH, "val_size": 40}
    config = RAMConfig(core="lstm", hidden_size=16)
    learner = RAMLearner(settings, config, 8, 0, torch.device("cpu"), eval_episodes=20)
    result, _ = learner.evaluate("val")
    assert len(result.successes) == 40 and (result.labels == -1).all()
    assert learner.validation_error() == result.error_percent
    assert result.locations.shape == (40, 23, 2) and result.target_boxes.shape == (40, 23, 4)
    assert np.isfinite(learner.loss(8)["total"].item())
    for refused in (lambda: learner.predictor(), lambda: learner.evaluate("val", samples=3),
                    lambda: learner.evaluate_locations("val", "random")):  # fmt: skip
        with pytest.raises(ConfigError, match="game"):
            refused()
    for bad in (RAMConfig(reward="probability"), RAMConfig(early_answer_weight=0.5)):
        with pytest.raises(ConfigError, match="In a game"):
            RAMLearner(settings, bad, 8, 0, torch.device("cpu"))
    still = {"task": "mnist", "glimpses": 2}
    with pytest.raises(ConfigError, match="entropy-weight"):
        RAMLearner(still, RAMConfig(entropy_weight=0.01), 8, 0, torch.device("cpu"))


def test_flops_per_step_are_one_step_of_play_not_the_whole_game():
    import torch

    from glimpse.agents.cost import count_flops, flops_per_step
    from glimpse.agents.learners import RAMLearner
    from glimpse.agents.ram import RAMConfig

    learner = RAMLearner(CATCH, RAMConfig(core="lstm", hidden_size=16), 8, 0, torch.device("cpu"))
    settings = {**CATCH, "action_type": "continuous"}  # RAM's, as its run config records
    episodes = evaluation_episodes(settings, "test", 1)
    episodes.reset(np.ones(1, bool))
    model = learner.model
    one_step = count_flops(lambda: model.step(episodes.observations(), None, False, False))
    # the last step answers instead of choosing a location: a few FLOPs less, once in 23
    assert flops_per_step(learner.policy(), settings) == pytest.approx(one_step, rel=1e-3)


def test_an_lstm_layer_is_counted_as_its_cells_products():
    import torch

    from glimpse.agents.cost import count_flops

    torch.manual_seed(0)
    layer, cell = torch.nn.LSTM(24, 16), torch.nn.LSTMCell(24, 16)
    steps = count_flops(lambda: layer(torch.randn(5, 3, 24)))  # 5 steps of a batch of 3
    assert steps == 5 * count_flops(lambda: cell(torch.randn(3, 24))) == 5 * 3 * 2 * 64 * 40


def test_the_screen_observation_is_the_canvas_and_recurrent_ppo_reads_it_through_a_cnn(tmp_path):
    import torch
    from gymnasium.utils.env_checker import check_env

    from glimpse.agents.extractors import ScreenExtractor
    from glimpse.agents.ppo import PPOConfig, build_model, load_model
    from glimpse.cli import main
    from glimpse.envs.sb3 import GlimpseVecEnv
    from glimpse.registration import ENVIRONMENTS

    env = gym.make("Glimpse/Catch64-v0", screen=True)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(env.action_space.sample())
    np.testing.assert_array_equal(obs["screen"], env.unwrapped.episodes.canvases[0])
    extractor = ScreenExtractor(env.observation_space, features_dim=32)
    batch = {key: torch.as_tensor(value[None]).float() for key, value in obs.items()}
    assert extractor(batch).shape == (1, 32)
    assert extractor.mix.in_features == 32 * 8 * 8 + 1  # 64 -> 32 -> 16 -> 8
    strides = [layer.stride[0] for layer in extractor.convolutions if hasattr(layer, "stride")]
    assert strides == [2, 2, 2]  # above 32 pixels even the first convolution halves the side
    # recurrent-ppo builds its policy on the screen, trains, and loads back the same way
    settings = {**ENVIRONMENTS["Glimpse/Catch-v0"], "screen": True}
    config = PPOConfig(n_envs=8, n_steps=32, batch_size=128)
    model = build_model("recurrent-ppo", GlimpseVecEnv(None, 8, **settings), config, 0, "cpu",
                        None)  # fmt: skip
    assert isinstance(model.policy.features_extractor, ScreenExtractor)
    convolutions = model.policy.features_extractor.convolutions
    assert [layer.stride[0] for layer in convolutions if hasattr(layer, "stride")] == [1, 2, 2]
    model.learn(256)
    model.save(tmp_path / "full.zip")
    loaded = load_model("recurrent-ppo", config, settings, tmp_path / "full.zip", "cpu")
    assert isinstance(loaded.policy.features_extractor, ScreenExtractor)
    plain = ["train", "ppo", "--env", "Glimpse/Catch-v0", "--screen", "--runs-dir",
             str(tmp_path), "--name", "refused"]  # fmt: skip
    assert main(plain) == 2 and not (tmp_path / "refused").exists()


def test_a_full_view_run_evaluates_with_its_flops_and_no_gaze_and_viz_refuses_it(tmp_path, capsys):
    from glimpse.agents.runs import evaluate_run
    from glimpse.cli import main

    train = ["train", "recurrent-ppo", "--env", "Glimpse/Catch-v0", "--screen", "--val-size", "40",
             "--total-steps", "256", "--n-envs", "8", "--n-steps", "32", "--batch-size", "64",
             "--eval-every", "256", "--eval-episodes", "40", "--threads", "1", "--no-progress",
             "--runs-dir", str(tmp_path), "--name", "full"]  # fmt: skip
    assert main(train) == 0
    result = evaluate_run(tmp_path / "full", "val")
    assert result["game"] and "on_target" not in result  # its glimpses go unread
    assert result["flops_per_step"] > 1_000_000  # the CNN and the LSTM's 4 x 256 x 512 products
    capsys.readouterr()
    assert main(["viz", str(tmp_path / "full")]) == 2
    assert "reads no glimpses" in capsys.readouterr().err
    assert not (tmp_path / "full" / "trajectories.gif").exists()

