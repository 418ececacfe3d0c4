"""Training speed on this machine's CPU: RAM's step (MNIST, batch 128) and the baselines'.

1. Images per second of the whole training step: the batched episodes (canvases, glimpses,
   rewards), the forward and backward passes and the optimiser step; with the hand-written
   backward pass through time and its products on oneDNN's kernels (the default,
   ``agents/bptt.py``) and, for comparison in the same run, with MKL's products (PyTorch's
   default for float32 on a CPU) and with autograd's backward pass. Also the arithmetic of
   one step (forward and backward), counted by ``torch.utils.flop_counter``, to compare with
   the float32 matmul speed of this CPU (MKL's and oneDNN's).
2. With ``--baseline-bptt FILE`` (an older ``agents/bptt.py``): the hand-written step with the
   current file and with FILE's, alternating 20-step measurements in one process (medians of
   ``--rounds``). Separate runs of this script differ by more than 10% from one minute to
   the next on a shared machine; alternating in one process compares two versions fairly.
3. With ``--against REV`` (a git revision of this repository): the whole training step of the
   working tree and of REV's files (episodes, sensor, model, all of it), alternating
   measurements of ``--seconds`` in fresh processes, ``--rounds`` of each.
4. With ``--port PATH`` (a checkout of the most used PyTorch RAM port, whose ``model.py`` and
   ``modules.py`` are imported from PATH, never copied): its own model at our sizes and the
   training step its trainer runs (the glimpse loop, its hybrid loss, Adam), fed MNIST images
   already in memory, alternating 20-step measurements with ours (the products this machine
   chose) in one process; prints both and the ratio.
5. With ``--canvases``: RAM's training step on cluttered 60, 100 and 200 px (each id's own
   sensor), alternating 20-step measurements in one process: images/s, each as a share of
   the 60 px rate, and the time each step spends in the episodes (new canvases and the
   sensor's reads, which grow with the canvas; the networks do not).
6. With ``--profile``: where an MNIST step's time goes: milliseconds per step, the part in
   the episodes, the step at batch 8 (its products are small, so what is left is the fixed
   cost of issuing the step's operations), and the products' time at the machine's matmul
   speed.
7. With ``--baselines SIZE``: the full-view baselines' training step (new canvases, forward,
   backward, Adam; each at its 100 px comparison recipe's sizes) on cluttered SIZE px, in
   float32 and in bfloat16 (the two that ``--precision auto`` chooses from), alternating 20-step
   measurements in one process (``--rounds``, at most 10): images/s of each and the ratio, and
   whether the CPU has bfloat16 instructions.
   With ``--layouts SIZE``: the same for the convolutional baselines in float32, their
   convolutions in the channels-last layout they use against PyTorch's default NCHW.
8. With ``--to-error E``: a ``glimpse train`` run (``--epochs``, ``--glimpses``) that logs the
   test error after every epoch (``--track-test``); prints the training time until it first
   reached E.

    python benchmarks/train_speed.py
    git show 5a9ae3d:agents/bptt.py > /tmp/bptt_before.py
    python benchmarks/train_speed.py --threads 2 1 --baseline-bptt /tmp/bptt_before.py
    python benchmarks/train_speed.py --threads 2 1 --against 9f6f525 --rounds 5 --seconds 6
    python benchmarks/train_speed.py --to-error 1.5 --epochs 40 --glimpses 7 --threads 1
    python benchmarks/train_speed.py --threads 2 1 --port ~/src/recurrent-visual-attention
    python benchmarks/train_speed.py --threads 2 1 --canvases
    python benchmarks/train_speed.py --threads 2 1 --profile
    python benchmarks/train_speed.py --threads 1 --baselines 100 --rounds 4
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium
import torch
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import glimpse
import glimpse.agents.bptt
import glimpse.agents.ram
from glimpse.agents.baselines import (
    BASELINES,
    BaselineConfig,
    FullViewLearner,
    cpu_has_bfloat16,
)
from glimpse.agents.bptt import ProductsChoice, choose_products
from glimpse.agents.learners import RAMLearner
from glimpse.agents.ram import RAMConfig
from glimpse.agents.recipes import recipe
from glimpse.agents.runs import resolve_config, train_run
from glimpse.agents.trainer import adam_kwargs
from glimpse.tasks import TaskConfig, make_task

ENV_ID = "Glimpse/MNIST-v0"
REPOSITORY = Path(__file__).resolve().parents[1]


def training_step(
    batch_size: int, hand_written: bool = True, env_id: str = ENV_ID
) -> Callable[[], None]:
    """One training step of a fresh RAM learner on ``env_id``: episodes, forward, backward,
    Adam."""
    return timed_training_step(batch_size, hand_written, env_id)[0]


def timed_training_step(
    batch_size: int, hand_written: bool = True, env_id: str = ENV_ID
) -> tuple[Callable[[], None], list[float]]:
    """:func:`training_step`, and a one-item list that adds up the seconds spent in the
    episodes' own calls (new canvases, the paddle or nothing, glimpses read by the sensor):
    what grows with the canvas, beside the networks that do not."""
    settings = gymnasium.spec(env_id).kwargs
    learner = RAMLearner(settings, RAMConfig(), batch_size, seed=0, device=torch.device("cpu"))
    learner.model.hand_written_bptt = hand_written
    optimizer = torch.optim.Adam(learner.model.parameters(), lr=1e-3, **adam_kwargs())
    in_episodes = [0.0]
    episodes = learner.train_episodes
    for name in ("reset", "step", "observations"):
        method = getattr(episodes, name)

        def timed(*args: object, _method: Callable[..., object] = method) -> object:
            start = time.perf_counter()
            try:
                return _method(*args)
            finally:
                in_episodes[0] += time.perf_counter() - start

        setattr(episodes, name, timed)  # on this instance only

    return gradient_step(learner, optimizer, batch_size), in_episodes


def gradient_step(
    learner: Any, optimizer: torch.optim.Optimizer, batch_size: int
) -> Callable[[], None]:
    """One training step of ``learner`` (RAM's or a full-view baseline's): its loss on a new
    batch, the backward pass and ``optimizer``'s update."""

    def step() -> None:
        loss = learner.loss(batch_size)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


@contextlib.contextmanager
def onednn_products(enabled: bool) -> Iterator[None]:
    """The hand-written pass's products on oneDNN (``glimpse.agents.bptt.use_onednn``) or not,
    inside the block; a tree without that switch (an older one, under ``--against``) runs as it
    is."""
    if not hasattr(glimpse.agents.bptt, "use_onednn"):
        yield
        return
    default = glimpse.agents.bptt.use_onednn
    glimpse.agents.bptt.use_onednn = enabled and getattr(
        glimpse.agents.bptt, "ONEDNN_AVAILABLE", default
    )
    try:
        yield
    finally:
        glimpse.agents.bptt.use_onednn = default


def images_per_second(
    threads: int, batch_size: int, seconds: float, hand_written: bool = True, onednn: bool = True
) -> float:
    """Training images/s; ``onednn=False``: the hand-written pass's products on MKL instead."""
    torch.set_num_threads(threads)
    with onednn_products(onednn):
        step = training_step(batch_size, hand_written)
        for _ in range(10):  # warm-up
            step()
        batches, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            step()
            batches += 1
        return batches * batch_size / (time.perf_counter() - start)


def alternating_rates(
    steps: dict[str, Callable[[], None]], batch_size: int, rounds: int
) -> dict[str, list[float]]:
    """Images/s of each training step, ``rounds`` times: in each round every step in turn,
    3 warm-up steps after the switch, then 20 timed."""
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            for _ in range(3):
                step()
            start = time.perf_counter()
            for _ in range(20):
                step()
            rates[name].append(20 * batch_size / (time.perf_counter() - start))
    return rates


def against_baseline(threads: int, batch_size: int, baseline: Path, rounds: int) -> None:
    """Median images/s of the current ``agents/bptt.py`` and of ``baseline``, alternating."""
    torch.set_num_threads(threads)
    spec = importlib.util.spec_from_file_location("baseline_bptt", baseline)
    if not baseline.is_file() or spec is None or spec.loader is None:
        raise SystemExit(
            f"{baseline} is not a Python file: pass an older agents/bptt.py, for example "
            f"`git show 5a9ae3d:agents/bptt.py > /tmp/bptt_before.py`."
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    versions = {
        "current": glimpse.agents.ram.glimpse_core_sequence,
        str(baseline): module.glimpse_core_sequence,
    }
    step = training_step(batch_size)

    def with_sequence(sequence: Callable[..., torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            glimpse.agents.ram.glimpse_core_sequence = sequence  # what RAM.encode calls
            step()

        return run

    try:
        steps = {name: with_sequence(sequence) for name, sequence in versions.items()}
        rates = alternating_rates(steps, batch_size, rounds)
    finally:
        glimpse.agents.ram.glimpse_core_sequence = versions["current"]
    for name, values in rates.items():
        print(f"{threads} thread(s), {name}: {statistics.median(values):,.0f} images/s "
              f"(median of {rounds} alternating 20-step measurements)")  # fmt: skip


def port_training_step(port: Path, batch_size: int) -> Callable[[], None]:
    """One training step of the port at ``port`` (its ``RecurrentAttention`` at our sizes:
    MNIST's sensor, 128 + 128 glimpse units, 256 core units, sigma 0.05), as its trainer runs
    it: a zero state and a uniform first location, ``model(x, l_t, h_t)`` for each glimpse
    (``last=True`` at the end), then ``nll + mse(baselines, R) + 0.01 * reinforce`` and Adam,
    on MNIST images already in memory (no data loader)."""
    if not (port / "model.py").is_file() or not (port / "modules.py").is_file():
        raise SystemExit(
            f"{port} has no model.py and modules.py: pass a checkout of the port, for example "
            "`git clone https://github.com/kevinzakka/recurrent-visual-attention`."
        )
    sys.path.insert(0, str(port))
    try:
        from model import RecurrentAttention  # the port's own module
    finally:
        sys.path.remove(str(port))
    settings = gymnasium.spec(ENV_ID).kwargs
    glimpses, k = settings["glimpses"], settings["num_scales"]
    torch.manual_seed(0)
    model = RecurrentAttention(g=settings["glimpse_size"], k=k, s=2, c=1, h_g=128, h_l=128,
                               std=0.05, hidden_size=256, num_classes=10)  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    task = make_task(TaskConfig(task="mnist"))
    fixed = task.fixed_canvases("val")
    images = torch.tensor(fixed.images[: 16 * batch_size]).float().div_(255.0)  # a copy
    labels = torch.from_numpy(fixed.labels[: 16 * batch_size])
    batch_number = [0]

    def step() -> None:
        start = batch_number[0] % 16 * batch_size
        batch_number[0] += 1
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        optimizer.zero_grad()
        h_t = torch.zeros(batch_size, 256, requires_grad=True)
        l_t = torch.empty(batch_size, 2).uniform_(-1, 1).requires_grad_()
        log_pi, baselines = [], []
        for _ in range(glimpses - 1):
            h_t, l_t, b_t, p = model(x, l_t, h_t)
            log_pi.append(p)
            baselines.append(b_t)
        h_t, l_t, b_t, log_probas, p = model(x, l_t, h_t, last=True)
        log_pi.append(p)
        baselines.append(b_t)
        pis, bases = torch.stack(log_pi, dim=1), torch.stack(baselines, dim=1)
        reward = (log_probas.argmax(1) == y).float()[:, None].expand_as(bases)
        reinforce = (-pis * (reward - bases.detach())).sum(dim=1).mean()
        loss = F.nll_loss(log_probas, y) + F.mse_loss(bases, reward) + 0.01 * reinforce
        loss.backward()
        optimizer.step()

    return step


def products_now(threads: int) -> ProductsChoice:
    """Which products our training step runs on ``threads`` threads, measured now (not read
    from the cache, which may hold a measurement taken while the machine was busy), and
    printed with the measurement behind it."""
    torch.set_num_threads(threads)
    choice = glimpse.agents.bptt._chosen = choose_products(measure=True)
    print(f"{threads} thread(s), products: {choice.describe()}")
    return choice


def against_port(threads: int, batch_size: int, port: Path, rounds: int) -> None:
    """Median images/s of our training step and the port's, alternating 20-step
    measurements in one process, and their ratio."""
    products_now(threads)
    steps = {"glimpse": training_step(batch_size), "the port": port_training_step(port, batch_size)}
    rates = alternating_rates(steps, batch_size, rounds)
    ours, theirs = (statistics.median(rates[name]) for name in steps)
    print(f"{threads} thread(s): glimpse {ours:,.0f} images/s, the port {theirs:,.0f} "
          f"({ours / theirs:.2f} times; medians of {rounds} alternating 20-step "
          f"measurements each)")  # fmt: skip


CANVAS_IDS = ("Glimpse/ClutteredMNIST60-v0", "Glimpse/ClutteredMNIST100-v0",
              "Glimpse/ClutteredMNIST200-v0")  # fmt: skip


def across_canvases(threads: int, batch_size: int, rounds: int) -> None:
    """RAM's training images/s on cluttered 60, 100 and 200 px (each id's own sensor: 3, 4
    and 5 scales of 12 x 12, 8 glimpses), alternating 20-step measurements in one process,
    with the share of each step spent in the episodes (canvases and sensor), and each rate
    as a share of the 60 px one."""
    torch.set_num_threads(threads)
    timed = {env_id: timed_training_step(batch_size, env_id=env_id) for env_id in CANVAS_IDS}
    steps = {env_id: step for env_id, (step, _) in timed.items()}
    rates = alternating_rates(steps, batch_size, rounds)
    first = statistics.median(rates[CANVAS_IDS[0]])
    print(f"| threads | environment | images/s | share of {CANVAS_IDS[0]}'s | seconds in the "
          "episodes per step (share of the step) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for env_id in CANVAS_IDS:
        rate = statistics.median(rates[env_id])
        step_seconds = batch_size / rate
        # every measured step also ran 3 warm-up steps after the switch: 23 steps a round
        episode_seconds = timed[env_id][1][0] / (23 * rounds)
        print(f"| {threads} | {env_id} | {rate:,.0f} | {100 * rate / first:.0f}% "
              f"| {1000 * episode_seconds:.1f} ms ({100 * episode_seconds / step_seconds:.0f}%) |")


def baseline_step(
    name: str, size: int, precision: str, batch_size: int, channels_last: bool = True
) -> Callable[[], None]:
    """One training step of a fresh full-view learner ``name`` (the sizes of its recipe
    ``compare-clutteredmnist100-NAME``) on cluttered ``size`` px, in ``precision``; with
    ``channels_last=False`` its convolutions' weights (so their activations) in PyTorch's
    default NCHW layout instead of the channels-last one the baselines use."""
    settings = gymnasium.spec(f"Glimpse/ClutteredMNIST{size}-v0").kwargs
    sizes = recipe(f"compare-clutteredmnist100-{name}").settings.get("model", {})
    config = BaselineConfig(**{"attention_steps": 8, **sizes, "precision": precision})
    learner = FullViewLearner(name, settings, config, seed=0, device=torch.device("cpu"))
    if not channels_last:
        learner.model.to(memory_format=torch.contiguous_format)
    optimizer = torch.optim.Adam(learner.model.parameters(), lr=1e-3, **adam_kwargs())
    return gradient_step(learner, optimizer, batch_size)


# The two ways --baselines and --layouts set up a baseline's step, by column: (precision,
# channels-last convolutions); the ratio is the second column's rate over the first's.
PRECISION_VARIANTS = {"float32": ("float32", True), "bfloat16": ("bfloat16", True)}
LAYOUT_VARIANTS = {"NCHW": ("float32", False), "channels-last": ("float32", True)}


def baseline_variants(
    threads: int, batch_size: int, rounds: int, size: int, names: Sequence[str],
    variants: dict[str, tuple[str, bool]],
) -> None:  # fmt: skip
    """Training images/s of each baseline in ``names`` set up two ways (``variants``: column
    name -> ``baseline_step``'s precision and channels-last), alternating; one table row each."""
    torch.set_num_threads(threads)
    # Measured on every CPU, bfloat16 included where it is emulated: that is the point.
    warnings.filterwarnings("ignore", "precision bfloat16")
    first, second = variants
    for name in names:
        steps = {column: baseline_step(name, size, precision, batch_size, channels_last)
                 for column, (precision, channels_last) in variants.items()}  # fmt: skip
        measured = alternating_rates(steps, batch_size, rounds)
        rates = {column: statistics.median(r) for column, r in measured.items()}
        print(f"| {threads} | {name} | {rates[first]:,.0f} | {rates[second]:,.0f} "
              f"| {rates[second] / rates[first]:.2f} |")  # fmt: skip


def where_the_time_goes(threads: int, batch_size: int, rounds: int) -> None:
    """One MNIST step split into what it costs: milliseconds per step at ``batch_size`` and at
    batch 8 (where the products are small: what remains is the fixed cost of issuing the
    step's operations), the episodes' share, and the products' time at this machine's float32
    matmul speed (the step's GFLOP at :func:`matmul_gflops`); each batch size measured in
    ``rounds`` 20-step measurements (medians), one batch size after the other."""
    products_now(threads)
    small = 8
    timed = {batch: timed_training_step(batch) for batch in (batch_size, small)}
    step_ms = {}
    for batch, (step, in_episodes) in timed.items():
        rates = alternating_rates({"step": step}, batch, rounds)["step"]
        step_ms[batch] = 1000 * batch / statistics.median(rates)
        in_episodes[0] /= 23 * rounds  # seconds per step (3 warm-up + 20 timed a round)
    chosen = glimpse.agents.bptt._chosen
    gflops = matmul_gflops(threads, onednn=chosen is not None and chosen.onednn)
    products_ms = 1000 * training_gflop(batch_size) / gflops
    episodes_ms = 1000 * timed[batch_size][1][0]
    print(f"| {threads} | {step_ms[batch_size]:.2f} | {episodes_ms:.2f} | {step_ms[small]:.2f} "
          f"({1000 * timed[small][1][0]:.2f} in the episodes) "
          f"| {products_ms:.2f} ({gflops:.0f} GFLOP/s) "
          f"| {step_ms[batch_size] - episodes_ms - products_ms:.2f} |")  # fmt: skip


def against_revision(
    threads: int, batch_size: int, revision: str, rounds: int, seconds: float
) -> None:
    """Median images/s of the working tree's training step and of git ``revision``'s.

    ``revision``'s files are extracted to a temporary folder; each measurement is a fresh
    process of this script (``--rate-only``) with that folder or the working tree first on
    the import path, the two alternating so that both see the same moments of a busy machine.
    """
    archive = subprocess.run(["git", "archive", revision], cwd=REPOSITORY, capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(
            f"`git archive {revision}` failed ({archive.stderr.decode().strip()}): pass a "
            f"commit of this repository, for example --against HEAD~1."
        )
    with tempfile.TemporaryDirectory() as old_tree:
        subprocess.run(["tar", "-x", "-C", old_tree], input=archive.stdout, check=True)
        trees = {"working tree": REPOSITORY, revision: Path(old_tree)}
        rates: dict[str, list[float]] = {name: [] for name in trees}
        operations: dict[str, int] = {}
        for _ in range(rounds):
            for name, tree in trees.items():
                command = [sys.executable, __file__, "--rate-only", "--threads", str(threads),
                           "--batch-size", str(batch_size), "--seconds", str(seconds)]  # fmt: skip
                environment = {**os.environ, "PYTHONPATH": str(tree)}
                done = subprocess.run(
                    command, cwd=tree, env=environment, capture_output=True, text=True, check=True
                )
                rate, operations[name] = done.stdout.split()[-2:]
                rates[name].append(float(rate))
    for name, values in rates.items():
        listed = " / ".join(f"{v:,.0f}" for v in values)
        median = statistics.median(values)
        print(f"{threads} thread(s), {name}: {median:,.0f} images/s (median of {rounds} "
              f"alternating {seconds:g}-second measurements: {listed}); "
              f"{int(operations[name]):,} tensor operations per step")  # fmt: skip


def training_gflop(batch_size: int) -> float:
    """GFLOP of one training step's forward and backward passes (the matrix products)."""
    settings = gymnasium.spec(ENV_ID).kwargs
    learner = RAMLearner(settings, RAMConfig(), batch_size, seed=0, device=torch.device("cpu"))
    with onednn_products(False), FlopCounterMode(display=False) as counter:  # it counts aten's
        learner.loss(batch_size)["total"].backward()
    return counter.get_total_flops() / 1e9


class _OperationCounter(TorchDispatchMode):
    """Counts the tensor operations that reach the kernels (after autograd and decompositions)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.count += 1
        return func(*args, **(kwargs or {}))


def operations_per_step(batch_size: int) -> int:
    """Tensor operations of one whole training step: on a CPU each costs a few microseconds
    of dispatch whatever its size, so their count is the step's overhead beside the products."""
    step = training_step(batch_size)
    step()  # the optimiser's state is created at the first step
    with _OperationCounter() as counter:
        step()
    return counter.count


def matmul_gflops(threads: int, onednn: bool) -> float:
    """float32 matrix-product speed at RAM's shapes (batch 128, 512 x 256), for reference:
    PyTorch's ``@`` (MKL) or :func:`glimpse.agents.bptt.linear` on oneDNN."""
    torch.set_num_threads(threads)
    a, w = torch.randn(128, 512), torch.randn(256, 512)
    product = (lambda: glimpse.agents.bptt.linear(a, w)) if onednn else (lambda: a @ w.t())
    with onednn_products(onednn):
        for _ in range(20):
            product()
        n, start = 2000, time.perf_counter()
        for _ in range(n):
            product()
    return 2 * 128 * 512 * 256 * n / (time.perf_counter() - start) / 1e9


def time_to_error(target: float, epochs: int, glimpses: int, threads: int, runs_dir: str) -> None:
    name = f"train-speed-{glimpses}g-{epochs}ep"
    run = {"threads": threads, "track_test": True, "runs_dir": runs_dir, "name": name}
    layer = {"env": {"glimpses": glimpses}, "train": {"epochs": epochs}, "run": run}
    train_run(resolve_config("ram", ENV_ID, [layer]), progress=False)
    metrics = Path(runs_dir) / name / "metrics.jsonl"
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if record["test_error"] <= target:
            minutes = record["seconds"] / 60
            print(f"test error {record['test_error']:.2f}% <= {target}% after epoch "
                  f"{record['epoch']}: {minutes:.1f} minutes of training")  # fmt: skip
            return
    print(f"the test error never reached {target}% in {epochs} epochs (see {metrics})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=20.0, help="time per speed measurement")
    parser.add_argument(
        "--baseline-bptt",
        type=Path,
        default=None,
        help="an older agents/bptt.py to compare with, alternating",
    )
    parser.add_argument(
        "--against", default=None, help="a git revision whose training step to compare with"
    )
    parser.add_argument(
        "--rounds", type=int, default=40,
        help="measurements of each: --baseline-bptt, --against; at most 10 for --port, "
        "--canvases, --profile, --baselines and --layouts",
    )
    parser.add_argument(
        "--port", type=Path, default=None, help="a checkout of the PyTorch RAM port to compare with"
    )
    parser.add_argument(
        "--canvases", action="store_true", help="RAM's rate on cluttered 60, 100 and 200 px"
    )
    parser.add_argument(
        "--profile", action="store_true", help="where an MNIST step's time goes, per thread count"
    )
    parser.add_argument(
        "--baselines", type=int, default=None, metavar="SIZE",
        help="the full-view baselines' step on cluttered SIZE px, float32 against bfloat16",
    )  # fmt: skip
    parser.add_argument(
        "--layouts", type=int, default=None, metavar="SIZE",
        help="the convolutional baselines' step on cluttered SIZE px, channels-last against NCHW",
    )  # fmt: skip
    parser.add_argument("--rate-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--to-error", type=float, default=None, help="test error target in %%")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of the --to-error run")
    parser.add_argument("--glimpses", type=int, default=6, help="glimpses in the --to-error run")
    parser.add_argument("--runs-dir", default="runs")
    args = parser.parse_args()
    if args.rate_only:  # one measurement, for --against
        rate = images_per_second(args.threads[0], args.batch_size, args.seconds, True)
        print(rate, operations_per_step(args.batch_size))
        return
    if args.baselines is not None or args.layouts is not None:
        size, names, variants, what = (
            (args.baselines, BASELINES, PRECISION_VARIANTS,
             f"bfloat16 instructions: {cpu_has_bfloat16()}")
            if args.baselines is not None else
            (args.layouts, ("soft", "cnn", "deep-cnn"), LAYOUT_VARIANTS, "float32")
        )  # fmt: skip
        first, second = variants
        print(f"torch {torch.__version__}, cluttered {size} px, full-view baselines, "
              f"batch {args.batch_size}; {what}\n")
        print(f"| threads | baseline | images/s, {first} | {second} | {second} / {first} |")
        print("|---|---|---|---|---|")
        for threads in args.threads:
            baseline_variants(threads, args.batch_size, min(args.rounds, 10), size, names,
                              variants)  # fmt: skip
        return
    what = "cluttered 60, 100, 200 px" if args.canvases else ENV_ID
    print(f"torch {torch.__version__}, {what}, RAM (paper sizes), batch {args.batch_size}\n")
    if args.port is not None:
        for threads in args.threads:
            against_port(threads, args.batch_size, args.port.expanduser(), min(args.rounds, 10))
        return
    if args.profile:
        print(f"| threads | ms per step, batch {args.batch_size} | of which in the episodes | ms "
              "per step at batch 8 (fixed cost) | the products alone at the matmul speed "
              "| the rest: issuing operations, element-wise work, Adam |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for threads in args.threads:
            where_the_time_goes(threads, args.batch_size, min(args.rounds, 10))
        return
    if args.canvases:
        for threads in args.threads:
            across_canvases(threads, args.batch_size, min(args.rounds, 10))
        return
    if args.baseline_bptt is not None:
        for threads in args.threads:
            against_baseline(threads, args.batch_size, args.baseline_bptt, args.rounds)
        return
    if args.against is not None:
        for threads in args.threads:
            against_revision(threads, args.batch_size, args.against, args.rounds, args.seconds)
        return
    choices = {threads: products_now(threads) for threads in args.threads}
    gflop, operations = training_gflop(args.batch_size), operations_per_step(args.batch_size)
    print(
        "| threads | images/s, oneDNN's products | MKL's products | autograd's backward pass "
        "| chosen | float32 matmul GFLOP/s at RAM's shapes, MKL / oneDNN | chosen, as a share "
        "of the matmul limit |"
    )
    print("|---|---|---|---|---|---|---|")  # fmt: skip
    for threads in args.threads:
        rate, mkl_rate, autograd_rate = (
            images_per_second(threads, args.batch_size, args.seconds, hand_written, onednn)
            for hand_written, onednn in ((True, True), (True, False), (False, False))
        )
        mkl, onednn = matmul_gflops(threads, False), matmul_gflops(threads, True)
        choice = glimpse.agents.bptt._chosen = choices[threads]
        chosen = rate if choice.onednn else mkl_rate
        limit = max(mkl, onednn) / gflop * args.batch_size  # images/s if only products cost
        print(f"| {threads} | {rate:,.0f} | {mkl_rate:,.0f} | {autograd_rate:,.0f} "
              f"| {'oneDNN' if choice.onednn else 'MKL'} | {mkl:.0f} / {onednn:.0f} "
              f"| {100 * chosen / limit:.0f}% of {limit:,.0f} |")  # fmt: skip
    print(f"\nOne training step, batch {args.batch_size}: {gflop:.2f} GFLOP (forward and "
          f"backward), {operations:,} tensor operations (episodes, forward, backward, "
          f"Adam).")  # fmt: skip
    if args.to_error is not None:
        time_to_error(args.to_error, args.epochs, args.glimpses, max(args.threads), args.runs_dir)


if __name__ == "__main__":
    main()
