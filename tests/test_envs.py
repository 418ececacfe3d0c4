"""The Gymnasium environments: every registered id, batching, autoreset, actions, SB3."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import glimpse  # noqa: F401  (registers the ids)
from glimpse.envs.evaluation import evaluate, evaluation_episodes
from glimpse.envs.glimpse_env import GlimpseEnv, GlimpseVectorEnv
from glimpse.errors import ConfigError, DataError

ENV_IDS = sorted(i for i in gym.registry if i.startswith("Glimpse/"))


def make_kwargs(env_id: str, image_folder: str) -> dict:
    if env_id == "Glimpse/ImageFolder-v0":
        return {"root": image_folder, "val_size": 2}
    return {}


def make_env(env_id, image_folder, **kwargs):
    try:
        return gym.make(env_id, **make_kwargs(env_id, image_folder), **kwargs)
    except DataError as error:
        if "fashion" in env_id.lower():
            pytest.skip(f"Fashion-MNIST not installed: {error}")
        raise


def test_every_documented_id_is_registered():
    assert ENV_IDS == sorted(
        [
            "Glimpse/MNIST-v0",
            "Glimpse/TranslatedMNIST-v0",
            "Glimpse/ClutteredMNIST60-v0",
            "Glimpse/ClutteredMNIST100-v0",
            "Glimpse/ClutteredMNIST200-v0",
            "Glimpse/FashionMNIST-v0",
            "Glimpse/ImageFolder-v0",
            "Glimpse/Catch-v0",
            "Glimpse/Catch64-v0",
        ]
    )


def test_the_module_prefix_form_works():
    env = gym.make("glimpse:Glimpse/MNIST-v0")
    assert env.observation_space["glimpse"].shape == (1, 1, 8, 8)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_passes_without_warnings(env_id, image_folder):
    env = make_env(env_id, image_folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=False)


def rollout(env, seed, steps=20):
    obs, _ = env.reset(seed=seed)
    action_rng = np.random.default_rng(seed)
    trace = [obs]
    for _ in range(steps):
        action = action_rng.integers(0, env.action_space.nvec)
        obs, reward, terminated, _, info = env.step(action)
        trace.append((obs, reward, terminated, info.get("label")))
        if terminated:
            obs, _ = env.reset()
            trace.append(obs)
    return trace


def same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return all(same(x, y) for x, y in zip(a, b, strict=True))
    return np.array_equal(a, b)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_two_environments_with_one_seed_roll_out_the_same(env_id, image_folder):
    first = rollout(make_env(env_id, image_folder), seed=7)
    second = rollout(make_env(env_id, image_folder), seed=7)
    assert all(same(a, b) for a, b in zip(first, second, strict=True))
    other = rollout(make_env(env_id, image_folder), seed=8)
    assert not all(same(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pickled_environment_continues_identically(env_id, image_folder):
    env = make_env(env_id, image_folder)
    env.reset(seed=3)
    env.step(env.action_space.sample())
    copy = pickle.loads(pickle.dumps(env))
    action = np.zeros(env.action_space.shape, dtype=np.int64)
    assert same(env.step(action)[0], copy.step(action)[0])
    assert len(pickle.dumps(env)) < 1_000_000  # the images are not in the pickle


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_rgb_array_frames_show_the_canvas_and_glimpse(env_id, image_folder):
    env = make_env(env_id, image_folder, render_mode="rgb_array")
    env.reset(seed=0)
    first = env.render()
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
    env.step(env.action_space.sample())
    second = env.render()
    assert first.shape == second.shape and not np.array_equal(first, second)
    vec = gym.make_vec(
        env_id, num_envs=2, render_mode="rgb_array", **make_kwargs(env_id, image_folder)
    )
    vec.reset(seed=0)
    assert len(vec.render()) == 2


@pytest.mark.parametrize(
    "env_id", ["Glimpse/ClutteredMNIST60-v0", "Glimpse/MNIST-v0", "Glimpse/Catch-v0"]
)
def test_vector_env_equals_single_envs_with_consecutive_seeds(env_id):
    n, seed = 5, 11
    vec = gym.make_vec(env_id, num_envs=n)
    assert isinstance(vec, GlimpseVectorEnv)  # native, not SyncVectorEnv
    singles = [gym.make(env_id) for _ in range(n)]
    vec_obs, _ = vec.reset(seed=seed)
    single_obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    rng = np.random.default_rng(0)
    ended = [False] * n
    for step in range(2 * gym.spec(env_id).kwargs["glimpses"] + 3):  # two episode ends
        for i in range(n):
            assert same({k: v[i] for k, v in vec_obs.items()}, single_obs[i]), (step, i)
        actions = rng.integers(0, vec.single_action_space.nvec, (n, 3))
        vec_obs, vec_rewards, vec_terminated, _, _ = vec.step(actions)
        for i, env in enumerate(singles):
            if ended[i]:  # NEXT_STEP: this step resets the slot and ignores its action
                single_obs[i], _ = env.reset()
                ended[i] = False
                assert vec_rewards[i] == 0.0 and not vec_terminated[i]
                continue
            single_obs[i], reward, terminated, _, _ = env.step(actions[i])
            ended[i] = terminated
            assert vec_rewards[i] == reward and vec_terminated[i] == terminated


def test_same_step_autoreset_reports_the_final_observation():
    vec = GlimpseVectorEnv(num_envs=3, autoreset_mode=AutoresetMode.SAME_STEP, task="mnist")
    assert vec.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    obs, _ = vec.reset(seed=0)
    for _ in range(5):
        obs, _, terminated, _, infos = vec.step(np.zeros((3, 3), np.int64))
        assert not terminated.any()
    last_glimpse = obs["glimpse"].copy()
    obs, rewards, terminated, _, infos = vec.step(np.ones((3, 3), np.int64))
    assert terminated.all()
    assert np.array_equal(infos["final_obs"][0]["glimpse"], last_glimpse[0])
    assert np.array_equal(infos["final_info"]["label"] == 1, rewards == 1.0)
    assert np.all(obs["step"] == 0.0)  # already the next episode


def test_next_step_autoreset_ignores_the_action_after_the_end():
    vec = GlimpseVectorEnv(num_envs=2, task="mnist", glimpses=2)
    vec.reset(seed=0)
    vec.step(np.zeros((2, 3), np.int64))
    _, _, terminated, _, infos = vec.step(np.zeros((2, 3), np.int64))
    assert terminated.all() and infos["_label"].all()
    obs, rewards, terminated, _, _ = vec.step(np.full((2, 3), 7))
    assert not terminated.any() and np.all(rewards == 0.0) and np.all(obs["step"] == 0.0)


def test_actions_out_of_range_are_clipped_and_bad_actions_raise():
    env = GlimpseEnv(task="mnist", grid_size=4)
    env.reset(seed=0)
    obs, *_ = env.step(np.array([99, -5, 3]))
    assert np.allclose(obs["location"], [0.75, -0.75])  # cells 3 and 0 of 4
    with pytest.raises(ValueError, match="shape"):
        env.step(np.array([1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="dtype"):
        env.step(np.array(["a", "b", "c"]))
    cont = GlimpseEnv(task="mnist", action_type="continuous")
    cont.reset(seed=0)
    obs, *_ = cont.step(np.array([4.0, -9.0, *np.zeros(10)], np.float32))
    assert np.allclose(obs["location"], [1.0, -1.0])
    with pytest.raises(gym.error.ResetNeeded):
        GlimpseEnv(task="mnist").step(np.zeros(3, np.int64))


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_vector_env_and_sb3_adapter_refuse_step_before_reset(mode):
    from glimpse.envs.sb3 import GlimpseVecEnv

    vec = gym.make_vec("Glimpse/MNIST-v0", num_envs=4, autoreset_mode=mode)
    assert isinstance(vec, GlimpseVectorEnv) and vec.metadata["autoreset_mode"] == mode
    with pytest.raises(gym.error.ResetNeeded, match=r"call reset\(\) before step\(\)"):
        vec.step(np.zeros((4, 3), np.int64))
    with pytest.raises(gym.error.ResetNeeded, match=r"call reset\(\) before step\(\)"):
        GlimpseEnv(task="mnist").step(np.zeros(3, np.int64))
    adapter = GlimpseVecEnv("Glimpse/MNIST-v0", num_envs=4)
    with pytest.raises(gym.error.ResetNeeded, match=r"call reset\(\) before step\(\)"):
        adapter.step(np.zeros((4, 3), np.int64))
    adapter.reset()
    assert adapter.step(np.zeros((4, 3), np.int64))[1].shape == (4,)


def test_bad_actions_are_reported_in_the_callers_terms():
    env = GlimpseEnv(task="mnist", grid_size=7)
    env.reset(seed=0)
    space = "MultiDiscrete([ 7  7 10])"
    with pytest.raises(ValueError) as error:
        env.step(np.array([1, 2]))
    assert str(error.value) == f"action has shape (2,), expected (3,) for {space}."
    with pytest.raises(ValueError, match=r"action has shape \(1, 3\), expected \(3,\)"):
        env.step(np.array([[1, 2, 3]]))
    with pytest.raises(ValueError) as error:
        env.step("left")
    assert str(error.value) == (
        "action must be a numpy array or a sequence of numbers, got str 'left'; expected shape "
        f"(3,) for {space}."
    )
    with pytest.raises(ValueError, match=r"got list \[1, \[2, 3\], 4\]"):
        env.step([1, [2, 3], 4])  # ragged: numpy cannot make an array of it
    with pytest.raises(ValueError, match=r"^action contains NaN: \[1.0, nan, 2.0\]"):
        env.step(np.array([1.0, np.nan, 2.0]))
    vec = GlimpseVectorEnv(num_envs=4, task="mnist", grid_size=7)
    vec.reset(seed=0)
    with pytest.raises(ValueError) as error:
        vec.step(np.zeros((4, 2)))
    assert str(error.value) == (
        f"actions have shape (4, 2), expected (4, 3): one action of {space} for each of the 4 "
        "environments."
    )
    with pytest.raises(ValueError, match=r"^actions must be .* got str 'left'; expected shape"):
        vec.step("left")
    nan_in_slot_2 = np.zeros((4, 3))
    nan_in_slot_2[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN in 1 of 4 environments \(the first, environment 2"):
        vec.step(nan_in_slot_2)


def test_infinite_actions_are_clipped_alike_in_single_and_vector_envs():
    assert "infinite ones too" in GlimpseEnv.__doc__  # the rule is on the env card
    settings = {"task": "mnist", "glimpses": 2, "action_type": "continuous",
                "class_reward": "log-likelihood", "score_bound": 5.0}  # fmt: skip
    inf = np.inf
    actions = np.array(
        [[inf, -inf, inf, *np.zeros(9)], [-inf, 0.5, -inf, *np.full(9, inf)]], np.float32
    )
    vec = GlimpseVectorEnv(num_envs=2, **settings)
    singles = [GlimpseEnv(**settings) for _ in range(2)]
    vec.reset(seed=5)
    for i, env in enumerate(singles):
        env.reset(seed=5 + i)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warnings either
        for _ in range(2):
            vec_obs, vec_rewards, vec_terminated, _, vec_infos = vec.step(actions)
            for i, env in enumerate(singles):
                obs, reward, terminated, _, info = env.step(actions[i])
                assert same(obs, {k: v[i] for k, v in vec_obs.items()})
                assert reward == vec_rewards[i] and terminated == vec_terminated[i]
    assert np.allclose(info["locations"], [singles[1].episodes.visited[0, 0], [-1.0, 0.5]])
    assert np.allclose(vec_infos["locations"][0, 1], [1.0, -1.0])  # the edges
    assert np.array_equal(vec_infos["prediction"], [0, 1])  # +inf wins; the first of equals
    clipped = np.array([[5.0, *np.zeros(9)], [-5.0, *np.full(9, 5.0)]])  # scores at +-bound
    log_probs = clipped - np.log(np.exp(clipped).sum(axis=1, keepdims=True))
    expected = log_probs[[0, 1], vec_infos["label"]]
    assert np.allclose(vec_rewards, expected, atol=1e-5)
    discrete = GlimpseEnv(task="mnist", grid_size=4)
    discrete.reset(seed=0)
    obs, *_ = discrete.step(np.array([inf, -inf, inf]))
    assert np.allclose(obs["location"], [0.75, -0.75])  # the last and first cells


def test_step_reward_stop_action_and_glimpse_cost():
    env = GlimpseEnv(
        task="mnist", allow_stop=True, glimpse_cost=0.1, step_reward=0.5, first_location="centre"
    )
    obs, _ = env.reset(seed=0)
    assert np.allclose(obs["location"], 0.0)
    _, reward, terminated, _, _ = env.step(np.array([0, 0, 0, 0]))
    assert not terminated and reward in (pytest.approx(-0.1), pytest.approx(0.4))
    _, reward, terminated, _, info = env.step(np.array([0, 0, 3, 1]))  # stop, answer 3
    assert terminated and info["glimpses_taken"] == 2 and info["prediction"] == 3
    assert reward == float(info["label"] == 3)
    assert np.isnan(info["locations"][2:]).all()


def test_log_likelihood_class_reward_is_the_log_probability_of_the_label():
    env = GlimpseEnv(task="mnist", glimpses=2, action_type="continuous",
                     class_reward="log-likelihood", score_bound=5.0, step_reward=0.5)  # fmt: skip
    assert np.allclose(env.action_space.high, [1, 1, *[5.0] * 10])
    _, info = env.reset(seed=0)
    scores = np.linspace(-2.0, 2.0, 10, dtype=np.float32)
    log_probs = scores - np.log(np.exp(scores).sum())
    _, reward, terminated, _, _ = env.step(np.array([0.0, 0.0, *scores], np.float32))
    assert not terminated
    _, final_reward, terminated, _, info = env.step(np.array([0.0, 0.0, *scores], np.float32))
    assert terminated
    assert final_reward == pytest.approx(log_probs[info["label"]], abs=1e-5)
    assert reward == pytest.approx(0.5 * log_probs[info["label"]], abs=1e-5)
    # scores beyond the bound count as the bound: 20 as 5
    env.reset(seed=1)
    env.step(np.zeros(12, np.float32))
    loud = np.array([0, 0, 20.0, *np.zeros(9)], np.float32)
    _, final_reward, _, _, info = env.step(loud)
    clipped = np.array([5.0, *np.zeros(9)])
    expected = clipped[info["label"]] - np.log(np.exp(clipped).sum())
    assert final_reward == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ConfigError, match="action_type='continuous'"):
        GlimpseEnv(task="mnist", class_reward="log-likelihood")


@pytest.mark.parametrize("num_envs", [0, -1])
def test_a_vector_env_of_no_slots_is_a_clear_error(num_envs):
    with pytest.raises(ConfigError, match=f"num_envs={num_envs} must be at least 1"):
        GlimpseVectorEnv(num_envs=num_envs, task="mnist")


class _AlwaysOne:
    """Looks at the centre and always answers 1."""

    def start(self, num_envs):
        self.num_envs = num_envs

    def act(self, observations):
        return np.tile([4, 4, 1], (self.num_envs, 1))


def test_evaluation_walks_the_whole_test_set_once_in_order():
    episodes = evaluation_episodes({"task": "mnist"}, split="test", num_envs=768)
    result = evaluate(_AlwaysOne(), episodes)
    test_labels = episodes.task.images["test"].labels
    assert np.array_equal(result.labels, test_labels)  # 10,000 canvases, in order
    assert result.accuracy == pytest.approx(np.mean(test_labels == 1))


def test_ppo_and_recurrent_ppo_train_on_single_env_and_adapter():
    from sb3_contrib import RecurrentPPO
    from stable_baselines3 import PPO

    from glimpse.agents.extractors import GlimpseFeaturesExtractor
    from glimpse.envs.sb3 import make_sb3_env

    torch.set_num_threads(1)
    kwargs = {"policy_kwargs": {"features_extractor_class": GlimpseFeaturesExtractor}}
    adapter = make_sb3_env("Glimpse/MNIST-v0", num_envs=8, seed=0)
    PPO("MultiInputPolicy", adapter, n_steps=32, batch_size=64, **kwargs).learn(300)
    PPO("MultiInputPolicy", gym.make("Glimpse/MNIST-v0"), n_steps=64, batch_size=32).learn(300)
    model = RecurrentPPO("MultiInputLstmPolicy", adapter, n_steps=32, batch_size=64, **kwargs)
    model.learn(300)
    assert model.num_timesteps >= 300 and len(model.ep_info_buffer) > 0
    assert "is_success" in model.ep_info_buffer[-1]
    single = gym.make("Glimpse/MNIST-v0")
    RecurrentPPO("MultiInputLstmPolicy", single, n_steps=64, batch_size=32).learn(300)


def test_final_info_carries_the_target_box_of_the_canvas():
    env = gym.make("Glimpse/TranslatedMNIST-v0", split="test", glimpses=2)
    boxes = env.unwrapped.task.fixed_target_boxes("test")
    for i in range(3):  # the test split in order, from the first canvas after a seeded reset
        env.reset(seed=5) if i == 0 else env.reset()
        canvas = env.unwrapped.episodes.canvases[0, 0]
        for _ in range(2):
            _, _, terminated, _, info = env.step(env.action_space.sample())
        assert terminated and info["target_box"].tolist() == boxes[i].tolist()
        top, left, bottom, right = info["target_box"]
        assert canvas.sum(dtype=np.int64) == canvas[top:bottom, left:right].sum(dtype=np.int64)
    vec = gym.make_vec("Glimpse/TranslatedMNIST-v0", num_envs=3, glimpses=1)  # training canvases
    vec.reset(seed=0)
    canvases = vec.unwrapped.episodes.canvases[:, 0].copy()
    _, _, terminated, _, info = vec.step(vec.action_space.sample())
    assert terminated.all() and info["_target_box"].all()
    for canvas, (top, left, bottom, right) in zip(canvases, info["target_box"], strict=True):
        rows, cols = np.flatnonzero(canvas.any(axis=1)), np.flatnonzero(canvas.any(axis=0))
        assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (top, bottom, left, right)


def test_finest_patch_on_target_counts_overlaps_and_skips_missing_glimpses():
    from glimpse.envs.evaluation import TargetShare, finest_patch_on_target
    from glimpse.sensor import GlimpseSensor

    sensor = GlimpseSensor(glimpse_size=8, num_scales=3)  # finest patch 8 x 8 pixels
    boxes = np.array([[20, 30, 40, 44], [0, 0, 10, 10]])  # top, left, bottom, right
    # On a 60 x 60 canvas, x = -1 + 2 c / 60 centres the patch at column c: its first column
    # is floor(c - 3.5), so c = 26.6 reaches column 30 and c = 26.4 stops at 29.
    at = lambda column, row: (-1 + 2 * column / 60, -1 + 2 * row / 60)  # noqa: E731
    locations = np.array([
        [at(37, 30), at(26.6, 30), at(26.4, 30), at(37, 43.4)],  # in, in at the edge, off, in
        [at(5, 5), at(13.4, 13.4), at(13.6, 13.6), (np.nan, np.nan)],  # in, in, off; none
    ], np.float32)  # fmt: skip
    hits = finest_patch_on_target(locations, boxes, sensor, 60, 60)
    assert np.array_equal(hits[0], [1, 1, 0, 1])
    assert np.array_equal(hits[1, :3], [1, 1, 0]) and np.isnan(hits[1, 3])
    share = TargetShare.of(hits)
    assert share.per_step == [100.0, 100.0, 0.0, 100.0]
    assert share.last == 50.0  # canvas 1's last glimpse is its third, off the box
    assert share.overall == pytest.approx(100 * 5 / 7)
