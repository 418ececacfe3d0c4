"""RAM: where gradients flow, REINFORCE on a toy task, and the variance the baseline removes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import glimpse.agents.bptt
from glimpse.agents.bptt import GlimpseCoreSequence, linear
from glimpse.agents.networks import GlimpseNetwork
from glimpse.agents.ram import (
    RAM,
    BaselineNetwork,
    CoreNetwork,
    LocationNetwork,
    RAMConfig,
    Rollout,
    hybrid_loss,
)
from glimpse.envs.episodes import GlimpseEpisodes
from glimpse.envs.glimpse_env import make_episodes
from glimpse.errors import ConfigError

PRODUCTS = [
    pytest.param(True, id="onednn", marks=pytest.mark.skipif(
        not glimpse.agents.bptt.ONEDNN_AVAILABLE,
        reason="this PyTorch build has no oneDNN linear operator",
    )),
    pytest.param(False, id="blas"),
]  # fmt: skip
"""The two ways :func:`glimpse.agents.bptt.linear` computes its products on a CPU."""


@pytest.fixture
def products(request, monkeypatch):
    """Sets ``glimpse.agents.bptt.use_onednn`` for one test (parametrise with ``PRODUCTS``)."""
    monkeypatch.setattr(glimpse.agents.bptt, "use_onednn", request.param)
    return request.param


def small_model_and_episodes(config: RAMConfig) -> tuple[RAM, GlimpseEpisodes]:
    torch.manual_seed(0)
    episodes = make_episodes(
        16, "train", False, {"task": "mnist", "action_type": "continuous", "glimpses": 4}
    )
    episodes.seed(np.arange(16, dtype=np.uint64))
    return RAM(episodes.glimpse_shape, 10, config), episodes


@pytest.fixture
def model_and_episodes():
    return small_model_and_episodes(RAMConfig())


def grads_of(module: torch.nn.Module) -> list[bool]:
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters()]


@pytest.mark.parametrize("locator_units", [0, 8])
def test_reinforce_trains_only_the_location_network(locator_units):
    model, episodes = small_model_and_episodes(RAMConfig(locator_units=locator_units))
    assert (model.locator.hidden is None) == (locator_units == 0)
    batch = model(episodes)
    batch.rewards[:8] = 1.0  # make the advantage non-zero whatever the untrained answers
    hybrid_loss(batch)["reinforce"].backward()
    assert all(grads_of(model.locator))
    for part in (model.glimpse_network, model.core, model.classifier, model.baseliner):
        assert not any(grads_of(part))


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_the_core_before_the_first_glimpse_is_the_core_from_a_zero_state(kind):
    torch.manual_seed(0)
    core = CoreNetwork(input_size=32, hidden_size=16, kind=kind)
    g_t = torch.randn(5, 32)
    zeros = torch.zeros(5, 16)
    from_zero = core(g_t, (zeros, zeros) if kind == "lstm" else (zeros,))
    for fresh, expected in zip(core(g_t, None), from_zero, strict=True):
        torch.testing.assert_close(fresh, expected)


def test_reinforce_core_also_trains_the_core_and_glimpse_networks():
    model, episodes = small_model_and_episodes(RAMConfig(reinforce_core=True))
    batch = model(episodes)
    batch.rewards[:8] = 1.0
    hybrid_loss(batch)["reinforce"].backward()
    assert all(grads_of(model.locator))
    assert any(grads_of(model.core)) and any(grads_of(model.glimpse_network))
    assert not any(grads_of(model.classifier)) and not any(grads_of(model.baseliner))


def test_classification_does_not_train_the_location_or_baseline_networks(model_and_episodes):
    model, episodes = model_and_episodes
    hybrid_loss(model(episodes))["classification"].backward()
    assert all(grads_of(model.classifier)) and any(grads_of(model.core))
    assert any(grads_of(model.glimpse_network))
    assert not any(grads_of(model.locator)) and not any(grads_of(model.baseliner))


def test_baseline_is_fit_only_by_its_squared_error(model_and_episodes):
    model, episodes = model_and_episodes
    hybrid_loss(model(episodes))["baseline"].backward()
    assert all(grads_of(model.baseliner))
    for part in (model.glimpse_network, model.core, model.locator, model.classifier):
        assert not any(grads_of(part))


def graph_nodes(tensor: torch.Tensor) -> set[str]:
    """Names of every node of the autograd graph that produced ``tensor``."""
    names, todo, seen = set(), [tensor.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("products", PRODUCTS, indirect=True)
@pytest.mark.parametrize("relu", [False, True])
def test_linear_is_f_linear_on_views(products, relu):
    torch.manual_seed(0)
    x = torch.randn(12, 7).t()  # (7, 12), a transposed view, as in the weight gradients
    wide = torch.randn(5, 20)
    weight = wide[:, 3:15]  # a slice of a wider matrix, as W_hh of [W_hh W_gh]
    bias, add = torch.randn(5), torch.randn(7, 5)
    for kwargs in ({}, {"bias": bias}, {"add": add}, {"bias": bias, "add": add}):
        expected = torch.nn.functional.linear(x.double(), weight.double(), None)
        expected = expected + (bias.double() if "bias" in kwargs else 0.0)
        expected = expected + (add.double() if "add" in kwargs else 0.0)
        expected = expected.relu() if relu else expected
        result = linear(x, weight, relu=relu, **kwargs)
        assert result.dtype == torch.float32 and result.shape == (7, 5)
        torch.testing.assert_close(result.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("products", PRODUCTS, indirect=True)
def test_linear_takes_empty_matrices(products):
    assert torch.equal(linear(torch.ones(0, 3).t(), torch.ones(0, 4).t()), torch.zeros(3, 4))
    assert linear(torch.ones(0, 3), torch.ones(4, 3), torch.ones(4), relu=True).shape == (0, 4)


@pytest.mark.parametrize("products", PRODUCTS, indirect=True)
def test_a_single_glimpse_episode_trains(products):
    torch.manual_seed(0)
    settings = {"task": "mnist", "action_type": "continuous", "glimpses": 1}
    episodes = make_episodes(8, "train", False, settings)
    episodes.seed(np.arange(8, dtype=np.uint64))
    model = RAM(episodes.glimpse_shape, 10, RAMConfig())
    batch = model(episodes)
    assert batch.log_pi.shape == (8, 0)  # no move: the answer follows the first glimpse
    hybrid_loss(batch)["total"].backward()
    assert model.core.linear.weight.grad[:, 256:].abs().sum() > 0  # W_gh
    assert model.core.linear.weight.grad[:, :256].abs().sum() == 0  # W_hh: no h_{t-1}


@pytest.mark.parametrize("products", PRODUCTS, indirect=True)
def test_the_hand_written_pass_runs_its_products_where_use_onednn_says(products):
    model, episodes = small_model_and_episodes(RAMConfig())
    with OperationNames() as seen:
        hybrid_loss(model(episodes))["total"].backward()
    assert ("mkldnn._linear_pointwise.default" in seen.names) == products
    assert ("mkldnn._linear_pointwise.binary" in seen.names) == products  # through time
    # oneDNN runs a weight that is a slice of a wider matrix with its slow reference loop:
    # every weight it gets is a dense matrix or the transpose of one
    assert all(w.is_contiguous() or w.t().is_contiguous() for w in seen.onednn_weights)


class OperationNames(TorchDispatchMode):
    """The names of the tensor operations that reach the kernels, and oneDNN's weights."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.onednn_weights: list[torch.Tensor] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func))
        if str(func).startswith("mkldnn._linear_pointwise"):  # (x, w, ...) or (x, add, w, ...)
            self.onednn_weights.append(args[1] if str(func).endswith("default") else args[2])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("products", PRODUCTS, indirect=True)
@pytest.mark.parametrize("reinforce_core", [False, True])
def test_hand_written_bptt_gives_autograds_loss_and_gradients(products, reinforce_core):
    model, episodes = small_model_and_episodes(RAMConfig(reinforce_core=reinforce_core))
    results = []
    assert model.hand_written_bptt  # the rectified core's default
    for hand_written in (True, False):
        model.hand_written_bptt = hand_written
        model.zero_grad()
        torch.manual_seed(1)
        episodes.seed(np.arange(16, dtype=np.uint64))
        terms = hybrid_loss(model(episodes))
        assert ("GlimpseCoreSequenceBackward" in graph_nodes(terms["total"])) == hand_written
        terms["total"].backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        results.append((terms, grads))
    (hand_terms, hand_grads), (auto_terms, auto_grads) = results
    for name in ("classification", "baseline", "reinforce"):
        torch.testing.assert_close(hand_terms[name], auto_terms[name])
    for name, grad in auto_grads.items():
        torch.testing.assert_close(hand_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert hand_grads["core.linear.weight"].abs().sum() > 0


def test_glimpse_core_sequence_passes_gradcheck():
    torch.manual_seed(0)
    horizon, batch = 4, 3
    net = GlimpseNetwork((1, 1, 3, 3), where_dim=2, what_units=4, where_units=3, out_units=5)
    core = torch.nn.Linear(6 + 5, 6)
    weights = [
        p.detach().double().requires_grad_()
        for p in (*net.parameters(), core.weight, core.bias)
    ]  # fmt: skip
    glimpses = torch.rand(horizon, batch, 9, dtype=torch.float64)
    wheres = torch.rand(horizon, batch, 2, dtype=torch.float64) * 2 - 1
    calls = []

    def observe(h_prev):
        t = len(calls) % horizon
        calls.append(h_prev)
        return glimpses[t], wheres[t]

    def states(*w):
        return GlimpseCoreSequence.apply(observe, horizon, *w)

    assert torch.autograd.gradcheck(states, weights)
    assert calls[0] is None and calls[1].shape == (batch, 6)  # observe acts on h_{t-1}


def test_log_probability_is_of_the_location_sent_to_the_environment():
    torch.manual_seed(0)
    locator = LocationNetwork(hidden_size=4, std=0.3)
    h = torch.randn(1000, 4)
    l_t, log_pi = locator(h, sample=True)
    assert not l_t.requires_grad
    mu = torch.tanh(locator.mean(h))
    expected = torch.distributions.Normal(mu, 0.3).log_prob(l_t).sum(1)
    torch.testing.assert_close(log_pi, expected, atol=1e-5, rtol=1e-5)
    assert (l_t.abs() > 1).any()  # raw samples, not squashed: the environment clips them


def test_log_likelihood_reward_still_ranks_right_answers_by_confidence():
    log_pi = torch.zeros(2, 1, requires_grad=True)
    batch = Rollout(
        log_probs=torch.tensor([[0.9, 0.1], [0.6, 0.4]]).log(),  # both right, one less sure
        labels=torch.zeros(2, dtype=torch.long),
        rewards=torch.ones(2),
        log_pi=log_pi,
        baselines=torch.full((2, 1), 1.0),  # a perfect baseline for the 0/1 reward
    )
    hybrid_loss(batch, reward_kind="correct")["reinforce"].backward()
    assert log_pi.grad is not None and not log_pi.grad.any()  # nothing left to learn from
    log_pi.grad = None
    batch.baselines = torch.full((2, 1), float(np.log(0.75)))
    terms = hybrid_loss(batch, reward_kind="log-likelihood")
    terms["reinforce"].backward()
    assert log_pi.grad is not None
    # more of the confident look's probability, less of the other's
    assert log_pi.grad[0, 0] < 0 < log_pi.grad[1, 0]
    expected = ((np.log(0.9) - np.log(0.75)) ** 2 + (np.log(0.6) - np.log(0.75)) ** 2) / 2
    assert terms["baseline"].item() == pytest.approx(expected, rel=1e-5)


def test_probability_reward_is_the_true_class_probability():
    log_pi = torch.zeros(3, 1, requires_grad=True)
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])  # right, right, wrong
    batch = Rollout(
        log_probs=probs.log(),
        labels=torch.zeros(3, dtype=torch.long),
        rewards=torch.tensor([1.0, 1.0, 0.0]),
        log_pi=log_pi,
        baselines=torch.full((3, 1), 0.5),
    )
    terms = hybrid_loss(batch, reward_kind="probability")
    terms["reinforce"].backward()
    assert log_pi.grad is not None
    # d reinforce / d log_pi = -(p(y) - b) / B: the confident look most, the wrong one least
    torch.testing.assert_close(log_pi.grad[:, 0], -(probs[:, 0] - 0.5) / 3)
    expected = ((0.9 - 0.5) ** 2 + (0.6 - 0.5) ** 2 + (0.2 - 0.5) ** 2) / 3
    assert terms["baseline"].item() == pytest.approx(expected, rel=1e-5)


# -- the toy task: looking at one spot reveals the label ---------------------------------------

TARGET = torch.tensor([0.6, -0.4])
RADIUS = 0.25


def toy_batch(locator, baseliner, h, rng) -> Rollout:
    """Two classes; the label is visible only within RADIUS of TARGET, else a coin flip."""
    l_t, log_pi = locator(h, sample=True)
    saw_label = (l_t - TARGET).norm(dim=1) < RADIUS
    correct = saw_label | (torch.rand(len(h), generator=rng) < 0.5)
    return Rollout(
        log_probs=torch.zeros(len(h), 2).log_softmax(1),
        labels=torch.zeros(len(h), dtype=torch.long),
        rewards=correct.float(),
        log_pi=log_pi[:, None],
        baselines=baseliner(h)[:, None],
    )


def hit_rate(locator, h) -> float:
    with torch.no_grad():
        l_t, _ = locator(h, sample=True)
    return float(((l_t - TARGET).norm(dim=1) < RADIUS).float().mean())


def test_reinforce_learns_to_look_where_the_label_is():
    torch.manual_seed(0)
    rng = torch.Generator().manual_seed(0)
    locator, baseliner = LocationNetwork(8, std=0.2), BaselineNetwork(8)
    h = torch.randn(256, 8)
    before = hit_rate(locator, h)
    optimizer = torch.optim.Adam([*locator.parameters(), *baseliner.parameters()], lr=0.02)
    for _ in range(300):
        loss = hybrid_loss(toy_batch(locator, baseliner, h, rng))
        optimizer.zero_grad()
        (loss["reinforce"] + loss["baseline"]).backward()
        optimizer.step()
    after = hit_rate(locator, h)
    # Chance (a uniform look) is pi r^2 / 4 = 0.05; a mean right on target hits
    # 1 - exp(-r^2 / 2 sigma^2) = 0.54 of the time with sigma = 0.2.
    assert before < 0.1 and after > 0.4, (before, after)
    with torch.no_grad():
        means = torch.tanh(locator.mean(h))
    assert (means - TARGET).norm(dim=1).mean() < 0.1


def test_the_baseline_reduces_the_variance_of_the_gradient():
    torch.manual_seed(0)
    rng = torch.Generator().manual_seed(1)
    locator, baseliner = LocationNetwork(8, std=0.2), BaselineNetwork(8)
    with torch.no_grad():  # a fitted baseline: the expected reward (about one half here)
        baseliner.linear.weight.zero_()
        baseliner.linear.bias.fill_(0.5)
    h = torch.randn(64, 8)

    def gradient_samples(use_baseline: bool) -> torch.Tensor:
        samples = []
        for _ in range(200):
            batch = toy_batch(locator, baseliner, h, rng)
            if not use_baseline:
                batch.baselines = torch.zeros_like(batch.baselines)
            locator.zero_grad()
            hybrid_loss(batch)["reinforce"].backward()
            samples.append(torch.cat([p.grad.flatten() for p in locator.parameters()]))
        return torch.stack(samples)

    with_baseline, without = gradient_samples(True), gradient_samples(False)
    assert with_baseline.var(0).sum() < 0.5 * without.var(0).sum()
    # Both estimate the same expected gradient: the baseline removes noise, not signal.
    difference = (with_baseline.mean(0) - without.mean(0)).norm()
    assert difference < 3 * without.std(0).norm() / np.sqrt(200)


def test_rollouts_of_one_image_measure_the_advantage_against_each_other():
    log_pi = torch.zeros(4, 1, requires_grad=True)
    batch = Rollout(
        log_probs=torch.zeros(4, 2).log_softmax(1),
        labels=torch.zeros(4, dtype=torch.long),
        rewards=torch.tensor([1.0, 0.0, 1.0, 1.0]),  # image 1: one of two right; image 2: both
        log_pi=log_pi,
        baselines=torch.full((4, 1), 0.5),
    )
    hybrid_loss(batch, rollouts_per_image=2)["reinforce"].backward()
    # advantages 1 - 0, 0 - 1, 1 - 1, 1 - 1; the loss is their negative mean
    torch.testing.assert_close(log_pi.grad, torch.tensor([[-0.25], [0.25], [0.0], [0.0]]))


def test_rollouts_of_one_image_share_its_canvas_and_first_look():
    from glimpse.agents.learners import RAMLearner

    settings = {"task": "mnist", "glimpses": 2}
    learner = RAMLearner(settings, RAMConfig(rollouts_per_image=4), 8, 1, torch.device("cpu"))
    episodes = learner.train_episodes
    episodes.reset(np.ones(8, bool))
    for first, last in ((0, 4), (4, 8)):
        assert (episodes.canvases[first:last] == episodes.canvases[first]).all()
        assert (episodes.locations[first:last] == episodes.locations[first]).all()
    assert (episodes.canvases[0] != episodes.canvases[4]).any()
    terms = learner.loss(8)
    assert torch.isfinite(terms["total"])
    # its episodes were built for batches of 8: another size would silently train on 8
    with pytest.raises(ValueError, match="batches of 8 episodes"):
        learner.loss(16)


def test_a_batch_must_hold_whole_sets_of_rollouts():
    from glimpse.agents.runs import resolve_config
    from glimpse.errors import ConfigError

    layer = {"model": {"rollouts_per_image": 4}, "train": {"batch_size": 10}}
    with pytest.raises(ConfigError, match="not a multiple of rollouts_per_image"):
        resolve_config("ram", "Glimpse/MNIST-v0", [layer])


def test_ram_refuses_the_environments_class_reward_and_names_its_own():
    from glimpse.agents.learners import RAMLearner
    from glimpse.errors import ConfigError

    settings = {"task": "mnist", "class_reward": "log-likelihood"}
    with pytest.raises(ConfigError, match="--reward log-likelihood"):
        RAMLearner(settings, RAMConfig(), 8, 1, torch.device("cpu"))


def test_location_std_schedule_explores_widely_first_then_settles():
    from glimpse.agents.learners import RAMLearner

    config = RAMConfig(location_std=0.05, location_std_start=0.2)
    assert config.location_std_at(0.0) == pytest.approx(0.2)
    assert config.location_std_at(0.25) == pytest.approx(0.1)  # geometric: halfway in log
    assert config.location_std_at(0.5) == config.location_std_at(1.0) == pytest.approx(0.05)
    assert RAMConfig(location_std=0.05).location_std_at(0.0) == 0.05

    learner = RAMLearner({"task": "mnist", "glimpses": 3}, config, 256, 1, torch.device("cpu"))
    locator = learner.model.locator
    draw = locator.draw
    for progress in (0.0, 1.0):
        deviations: list[torch.Tensor] = []

        def recording_draw(mu: torch.Tensor, sample: bool, out=deviations) -> torch.Tensor:
            l_t = draw(mu, sample)
            out.append(l_t - mu)
            return l_t

        locator.draw = recording_draw
        terms = learner.loss(256, progress)
        del locator.draw
        # the sampled looks spread around their means as the schedule says
        expected = config.location_std_at(progress)
        assert float(torch.cat(deviations).std()) == pytest.approx(expected, rel=0.1)
        assert float(terms["location_std"]) == pytest.approx(expected)


def test_early_answers_teach_every_state_the_class():
    model, episodes = small_model_and_episodes(RAMConfig(early_answer_weight=0.5))
    states = []
    encode = model.encode
    model.encode = lambda *args: states.append(encode(*args)) or states[-1]
    batch = model(episodes)
    # slot b, step t holds the class read from h_{t+1} of episode b (4 glimpses: h_1 .. h_3)
    h = states[0]  # (T, B, hidden)
    assert batch.early_log_probs.shape == (16, 3, 10)
    for b, t in ((0, 0), (5, 2), (15, 1)):
        torch.testing.assert_close(batch.early_log_probs[b, t], model.classifier(h[t, b, None])[0])
    terms = hybrid_loss(batch, early_answer_weight=0.5)
    expected = -batch.early_log_probs.gather(2, batch.labels[:, None, None].expand(16, 3, 1))
    torch.testing.assert_close(terms["early_classification"], expected.mean())
    paper = terms["classification"] + terms["baseline"] + terms["reinforce"]
    torch.testing.assert_close(terms["total"], paper + 0.5 * terms["early_classification"])
    terms["early_classification"].backward()
    for part in (model.glimpse_network, model.core, model.classifier):
        assert all(grads_of(part))
    for part in (model.locator, model.baseliner):
        assert not any(grads_of(part))
    assert "early_classification" not in hybrid_loss(batch)  # weight 0: the paper's loss
    assert small_model_and_episodes(RAMConfig())[0](episodes).early_log_probs is None


@pytest.mark.parametrize(
    "setting",
    [{"location_std": 0.0}, {"location_std_start": 0.0}, {"locator_units": -1},
     {"early_answer_weight": -0.5}],
)  # fmt: skip
def test_a_config_out_of_range_is_refused_with_its_name(setting):
    from glimpse.errors import ConfigError

    with pytest.raises(ConfigError, match=next(iter(setting))):
        RAMConfig(**setting)


def test_the_location_network_can_learn_at_its_own_rate(tmp_path):
    from glimpse.agents.learners import RAMLearner
    from glimpse.agents.run_directory import RunDirectory
    from glimpse.agents.trainer import TrainConfig, Trainer
    from glimpse.errors import ConfigError

    def trainer(location_lr_factor: float) -> Trainer:
        model = RAMConfig(location_lr_factor=location_lr_factor)
        learner = RAMLearner({"task": "mnist", "glimpses": 4}, model, 16, 1, torch.device("cpu"))
        config = TrainConfig(batch_size=16)
        return Trainer(learner, config, RunDirectory(tmp_path), {}, progress=False)

    assert len(trainer(1.0).optimizer.param_groups) == 1  # as runs saved before the option
    slow = trainer(0.1)
    model = slow.model
    assert [g["lr"] for g in slow.optimizer.param_groups] == [1e-3, pytest.approx(1e-4)]
    located = {id(p) for p in slow.optimizer.param_groups[1]["params"]}
    assert located == {id(p) for p in model.locator.parameters()}

    # the trainer's first Adam step moves every weight by about its group's learning rate
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    slow._train_step([])
    moved = {name: (p - before[name]).abs().max().item() for name, p in model.named_parameters()}
    assert moved["locator.mean.weight"] == pytest.approx(1e-4, rel=0.01)
    assert moved["core.linear.weight"] == pytest.approx(1e-3, rel=0.01)
    with pytest.raises(ConfigError, match="location_lr_factor"):
        RAMConfig(location_lr_factor=0.0)


def test_gae_credits_each_step_with_the_change_in_the_baseline_and_lambda_one_is_the_paper():
    from glimpse.agents.ram import _advantage

    rewards = torch.tensor([1.0, 0.0])
    baselines = torch.tensor([[0.2, 0.5, 0.9], [0.4, 0.1, 0.3]])
    paper, paper_loss = _advantage(rewards, baselines)
    torch.testing.assert_close(paper, rewards[:, None] - baselines)
    torch.testing.assert_close(paper_loss, ((rewards[:, None] - baselines) ** 2).sum(1).mean())
    gae, gae_loss = _advantage(rewards, baselines, gae_lambda=0.5)
    delta = torch.tensor([[0.3, 0.4, 0.1], [-0.3, 0.2, -0.3]])  # b_{t+1} - b_t, then R - b_T
    expected = torch.stack([delta[:, 0] + 0.5 * delta[:, 1] + 0.25 * delta[:, 2],
                            delta[:, 1] + 0.5 * delta[:, 2], delta[:, 2]], dim=1)  # fmt: skip
    torch.testing.assert_close(gae, expected)
    torch.testing.assert_close(gae_loss, (expected**2).sum(1).mean())  # target A_t + b_t
    with pytest.raises(ConfigError, match="choose one"):
        RAMConfig(gae_lambda=0.9, rollouts_per_image=4)


def test_baseline_core_lets_the_baselines_error_train_the_core_and_glimpse_networks():
    model, episodes = small_model_and_episodes(RAMConfig(baseline_core=True))
    hybrid_loss(model(episodes))["baseline"].backward()
    assert all(grads_of(model.baseliner)) and any(grads_of(model.core))
    assert any(grads_of(model.glimpse_network))
    assert not any(grads_of(model.locator)) and not any(grads_of(model.classifier))


def test_the_convolutional_glimpse_network_reads_the_scales_as_channels_and_is_trained():
    from glimpse.agents.networks import ConvGlimpseNetwork

    config = RAMConfig(glimpse_encoder="conv", glimpse_filters=6, reinforce_core=True)
    model, episodes = small_model_and_episodes(config)
    network = model.glimpse_network
    assert isinstance(network, ConvGlimpseNetwork) and network.image_shape == (1, 8, 8)
    assert [layer.out_channels for layer in network.convolutions[::2][:2]] == [6, 6]
    scales = ConvGlimpseNetwork((3, 1, 12, 12), what_units=16, channels=4)
    assert scales.convolutions[0].in_channels == 3 and scales.what.in_features == 4 * 6 * 6
    batch = model(episodes)
    terms = hybrid_loss(batch)
    terms["classification"].backward()  # the cross-entropy trains every convolution
    assert all(grads_of(network.convolutions)) and all(grads_of(network.what))
    model.zero_grad()
    batch = model(episodes)
    batch.rewards[:8] = 1.0
    hybrid_loss(batch)["reinforce"].backward()  # with --reinforce-core, REINFORCE too
    assert any(grads_of(network.convolutions)) and all(grads_of(model.locator))


def test_ppo_replays_a_batch_exactly_and_its_first_update_is_reinforces():
    from glimpse.agents.ram import EpisodeRecord, collect, ppo_loss

    model, episodes = small_model_and_episodes(RAMConfig(reinforce_core=True))
    with torch.no_grad():
        model.locator.mean.weight.normal_(0.0, 0.3)
    record = EpisodeRecord()
    played = model(episodes, record)
    collected = collect(played, record, "correct", 1, 1.0, model.locator.std)
    again = model.replay(collected.record, collected.labels, collected.rewards)
    for name in ("log_probs", "log_pi", "baselines"):  # the same weights: the same numbers
        torch.testing.assert_close(getattr(again, name), getattr(played, name))
    # at the first use the ratio is 1: PPO's gradient is REINFORCE's, term by term
    ppo = ppo_loss(again, collected)
    reinforce = hybrid_loss(played)
    for term in ("reinforce", "baseline", "classification", "total"):
        model.zero_grad()
        ppo[term].backward(retain_graph=True)
        ours = [p.grad.clone() if p.grad is not None else None for p in model.parameters()]
        model.zero_grad()
        reinforce[term].backward(retain_graph=True)
        for a, p in zip(ours, model.parameters(), strict=True):
            if a is None:
                assert p.grad is None or not p.grad.any()
            else:
                torch.testing.assert_close(a, p.grad)


def test_ppo_stops_pushing_a_location_whose_ratio_left_the_clip_range():
    from glimpse.agents.ram import EpisodeRecord, collect, ppo_loss

    model, episodes = small_model_and_episodes(RAMConfig())
    record = EpisodeRecord()
    collected = collect(model(episodes, record), record, "correct", 1, 1.0, model.locator.std)
    collected.advantage = torch.ones_like(collected.advantage)  # every look paid for
    collected.old_log_pi = collected.old_log_pi - 1.0  # as if the policy had since moved e-fold
    batch = model.replay(collected.record, collected.labels, collected.rewards)
    terms = ppo_loss(batch, collected, clip=0.2)
    assert terms["clipped"] == 1.0
    terms["reinforce"].backward()
    assert not any(grads_of(model.locator))  # clipped: no gradient left to push it further
    collected.old_log_pi = collected.old_log_pi + 1.0  # inside the range again
    model.zero_grad()
    ppo_loss(model.replay(collected.record, collected.labels, collected.rewards),
             collected)["reinforce"].backward()  # fmt: skip
    assert all(grads_of(model.locator))


def test_the_ppo_learner_plays_new_episodes_every_ppo_epochs_updates(monkeypatch):
    from glimpse.agents.learners import RAMLearner

    settings = {"task": "mnist", "glimpses": 3}
    learner = RAMLearner(settings, RAMConfig(location_learner="ppo", ppo_epochs=3), 8, 0,
                         torch.device("cpu"))  # fmt: skip
    played = []
    forward = learner.forward_model
    monkeypatch.setattr(learner, "forward_model", lambda *a: played.append(1) or forward(*a))
    optimizer = torch.optim.Adam(learner.model.parameters(), lr=1e-3)
    for _ in range(7):
        terms = learner.loss(8)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
    assert len(played) == 3  # updates 1, 4 and 7 play new episodes; the others replay
    assert set(terms) >= {"total", "classification", "baseline", "reinforce", "clipped"}
    game = {"task": "catch", "glimpses": 23, "glimpse_size": 6, "num_scales": 3}
    with pytest.raises(ConfigError, match="location-learner"):
        RAMLearner(game, RAMConfig(core="lstm", location_learner="ppo"), 8, 0,
                   torch.device("cpu"))  # fmt: skip


def test_a_resumed_ppo_learner_replays_the_batch_it_was_training_on():
    from glimpse.agents.learners import RAMLearner

    def learner() -> RAMLearner:
        config = RAMConfig(location_learner="ppo", ppo_epochs=3)
        return RAMLearner({"task": "mnist", "glimpses": 3}, config, 8, 0, torch.device("cpu"))

    first = learner()
    first.loss(8)  # plays a batch: two replays of it are still to come
    buffer = io.BytesIO()
    torch.save(first.data_state(), buffer)  # as the checkpoint keeps it
    buffer.seek(0)
    resumed = learner()
    resumed.model.load_state_dict(first.model.state_dict())
    resumed.load_data_state(torch.load(buffer, weights_only=True))
    assert resumed._collected is not None and resumed._collected.uses == 1
    torch.testing.assert_close(resumed.loss(8)["total"], first.loss(8)["total"])
    first.loss(8)  # the batch's last replay: a checkpoint need not keep it any more
    assert "collected" not in first.data_state()


def test_a_training_step_runs_under_pytorchs_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    from glimpse.agents.learners import RAMLearner

    learner = RAMLearner({"task": "mnist", "glimpses": 3}, RAMConfig(), 8, 0, torch.device("cpu"))
    with FlopCounterMode(display=False) as counter:  # its module hooks see every tensor
        learner.loss(8)["total"].backward()
    assert counter.get_total_flops() > 0
