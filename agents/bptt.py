"""The glimpse network and RAM's rectified core over a whole episode, with a hand-written backward.

Why: on a CPU, autograd's backward through an episode of T glimpses runs T small matrix products
per weight (one per glimpse) and walks a graph node for every operation of every glimpse. Only
the recurrence itself is sequential. :class:`GlimpseCoreSequence` runs the forward pass glimpse
by glimpse without recording a graph, keeps the activations, and in the backward pass:

1. walks back through time for the core's pre-activations only, one ``(B, H) x (H, H)`` product
   per glimpse: ``delta_t = (dL/dh_t + delta_{t+1} W_hh) * [h_t > 0]``;
2. then computes every weight's gradient with one large product over all ``T x B`` glimpses
   (``dW_gh = sum_t delta_t^T g_t``, and so on down the glimpse network).

The result is the gradient autograd would compute (``tests/test_ram.py`` checks both against
each other and ``torch.autograd.gradcheck``); the training step is faster (see
docs/performance.md). The glimpses themselves are inputs, not functions of the weights: where
the agent looks is a sampled constant, as in RAM's hybrid loss.

Every product goes through :func:`linear`, which on a CPU runs its float32 products either on
oneDNN's kernels or on the BLAS (MKL) that ``torch.addmm`` and ``@`` call, whichever
:func:`choose_products` measured to be faster on this machine: see their docstrings for why.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.autograd.function import FunctionCtx

from glimpse.agents.networks import GlimpseNetwork

# observe(h_prev) -> (flattened glimpse (B, D), where (B, W)); h_prev is None at the start
Observe = Callable[[torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


class GlimpseCoreSequence(torch.autograd.Function):
    """``h_1 .. h_T`` of ``g_t = f_g(x_t, l_{t-1})``, ``h_t = ReLU(W_hh h_{t-1} + W_gh g_t + b)``.

    ``observe(h_{t-1})`` returns the next glimpse and location (the agent acts on ``h_{t-1}``
    there, outside the graph); it is called ``horizon`` times, first with ``None`` (``h_0 = 0``).
    The core's weight is ``[W_hh W_gh]``, as in :class:`glimpse.agents.ram.CoreNetwork`.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        observe: Observe,
        horizon: int,
        w_what: torch.Tensor,
        b_what: torch.Tensor,
        w_where: torch.Tensor,
        b_where: torch.Tensor,
        w_combine: torch.Tensor,
        b_combine: torch.Tensor,
        w_core: torch.Tensor,
        b_core: torch.Tensor,
    ) -> torch.Tensor:
        hidden = w_core.shape[0]
        w_gh = w_core[:, hidden:]
        glimpses, wheres, features, g, h = [], [], [], [], []
        for _ in range(horizon):
            x_t, where_t = observe(h[-1] if h else None)
            h_g = linear(x_t, w_what, b_what, relu=True)
            h_l = linear(where_t, w_where, b_where, relu=True)
            features.append(torch.cat([h_g, h_l], dim=1))  # [h_g; h_l]
            g.append(linear(features[-1], w_combine, b_combine, relu=True))
            if h:  # [W_hh W_gh] [h_{t-1}; g_t]: one product
                h.append(linear(torch.cat([h[-1], g[-1]], dim=1), w_core, b_core, relu=True))
            else:  # h_0 = 0: only W_gh g_1
                h.append(linear(g[-1], w_gh, b_core, relu=True))
            glimpses.append(x_t), wheres.append(where_t)
        stacked = [torch.stack(v) for v in (glimpses, wheres, features, g, h)]
        ctx.save_for_backward(*stacked, w_what, w_combine, w_core)
        return stacked[-1]  # (T, B, hidden)

    @staticmethod
    def backward(ctx: FunctionCtx, grad_h: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, where, features, g, h, w_what, w_combine, w_core = ctx.saved_tensors  # type: ignore[attr-defined]
        horizon, hidden = h.shape[0], h.shape[2]
        w_hh, w_gh = w_core[:, :hidden], w_core[:, hidden:]
        # 1. through time: delta_t = dL/d(pre-activation of h_t)
        delta = _relu_backward(grad_h, h, out=torch.empty_like(grad_h))
        for t in range(horizon - 1, 0, -1):  # delta_{t-1} += delta_t W_hh, then ReLU's mask
            _relu_backward(linear(delta[t], w_hh.t(), add=delta[t - 1]), h[t - 1], out=delta[t - 1])
        # 2. every weight at once, over all T x B glimpses: dW = delta^T input = linear(delta^T,
        # input^T), the transposes being views
        flat = lambda v: v.reshape(-1, v.shape[-1])  # noqa: E731  (T, B, n) -> (T B, n)
        d_core = flat(delta)
        grad_core = torch.cat(
            [linear(flat(delta[1:]).t(), flat(h[:-1]).t()), linear(d_core.t(), flat(g).t())],
            dim=1,
        )
        d_g = _relu_backward(linear(d_core, w_gh.t()), flat(g))
        d_features = _relu_backward(linear(d_g, w_combine.t()), flat(features))
        what_units = w_what.shape[0]
        d_what, d_where = d_features[:, :what_units], d_features[:, what_units:]
        return (
            None,
            None,
            linear(d_what.t(), flat(x).t()),
            d_what.sum(0),
            linear(d_where.t(), flat(where).t()),
            d_where.sum(0),
            linear(d_g.t(), flat(features).t()),
            d_g.sum(0),
            grad_core,
            d_core.sum(0),
        )


def _relu_backward(
    grad: torch.Tensor, output: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``grad * [output > 0]``, the gradient through ``output = ReLU(x)``, written into ``out``
    (by default into ``grad`` itself).

    ReLU's own backward kernel, one pass: 42 us against 370 us on one CPU thread at 768 x 256
    for multiplying by the mask ``output > 0``, which builds a bool tensor and converts it to
    float first.
    """
    target = grad if out is None else out
    return torch.ops.aten.threshold_backward.grad_input(grad, output, 0.0, grad_input=target)


def _onednn_linear_available() -> bool:
    """Whether this PyTorch build has oneDNN's linear operator, and it runs here."""
    try:
        x = torch.ones(2, 3)
        return bool(torch.ops.mkldnn._linear_pointwise(x, x, None, "none", [], "")[0, 0] == 3)
    except (AttributeError, RuntimeError):  # a build without oneDNN, or a CPU it cannot serve
        return False


ONEDNN_AVAILABLE = _onednn_linear_available()

use_onednn: bool | None = None
"""Whether :func:`linear` runs oneDNN's kernels for CPU float32 tensors (``True``), the BLAS's
(``False``), or the faster of the two on this machine (``None``: :func:`choose_products` decides
at the first product). Settable, to compare the two."""


@dataclass(frozen=True)
class ProductsChoice:
    """Which kernels :func:`linear` runs on this CPU, and the measurement behind the choice."""

    onednn: bool
    onednn_gflops: float
    blas_gflops: float
    key: str
    measured_now: bool

    def describe(self) -> str:
        name = "oneDNN" if self.onednn else "BLAS (MKL)"
        source = "measured now" if self.measured_now else "measured earlier on this machine"
        return (
            f"{name} products: {self.onednn_gflops:.0f} GFLOP/s with oneDNN, "
            f"{self.blas_gflops:.0f} with the BLAS at RAM's shapes ({source}; {self.key})"
        )


_chosen: ProductsChoice | None = None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "glimpse" / "products.json"


def _gflops(onednn: bool, seconds: float = 0.03, rounds: int = 5) -> float:
    """GFLOP/s of :func:`linear` on the three kinds of product a RAM step runs, at its
    default sizes (batch 128, 6 glimpses, 256 units): the core's forward product with its
    ReLU, one step back through time, and a weight gradient over all glimpses; the best of
    ``rounds`` timings of about ``seconds`` each."""
    global use_onednn
    x, w_core = torch.randn(128, 512), torch.randn(256, 512)
    delta, w_hh = torch.randn(128, 256), torch.randn(256, 256)
    grads, inputs = torch.randn(768, 256), torch.randn(768, 512)
    flop = 2 * (128 * 512 * 256 + 128 * 256 * 256 + 768 * 256 * 512)

    def products() -> None:
        linear(x, w_core, relu=True)
        linear(delta, w_hh.t())
        linear(grads.t(), inputs.t())  # dW = sum over T x B of delta^T x

    saved, use_onednn = use_onednn, onednn
    try:
        products()  # warm-up: oneDNN builds its kernels on first use
        repeats = 1
        while True:
            start = time.perf_counter()
            for _ in range(repeats):
                products()
            if time.perf_counter() - start > seconds / 4 or repeats > 10_000:
                break
            repeats *= 2
        repeats = max(1, int(repeats * seconds / max(time.perf_counter() - start, 1e-9)))
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(repeats):
                products()
            best = min(best, time.perf_counter() - start)
        return flop * repeats / best / 1e9
    finally:
        use_onednn = saved


def choose_products(measure: bool = False) -> ProductsChoice:
    """The faster of oneDNN's and the BLAS's float32 products for :func:`linear` on this CPU.

    Which one wins depends on the CPU and the thread count: on our 2-core AMD EPYC machines
    oneDNN's AVX-512 kernels ran RAM's products at about twice MKL's speed (MKL is known to take
    slower paths on CPUs not made by Intel), while on the Intel Xeon machines of the same class
    MKL was the faster by about a tenth. So the choice is measured (about 0.4 s), alternating
    the two, and kept per CPU model, torch version and thread count in
    ``~/.cache/glimpse/products.json``; ``measure=True`` measures again.
    """
    if not ONEDNN_AVAILABLE:
        return ProductsChoice(False, 0.0, 0.0, "this PyTorch build has no oneDNN", True)
    key = f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    cache = _cache_file()
    try:
        known = json.loads(cache.read_text()) if cache.is_file() else {}
    except (OSError, ValueError):
        known = {}
    if not measure and isinstance(known.get(key), dict):
        try:
            return ProductsChoice(**{**known[key], "measured_now": False})
        except TypeError:
            pass  # written by another version: measure again
    onednn_rates, blas_rates = [], []
    for _ in range(2):  # alternating, so that a change in the machine's load hits both
        onednn_rates.append(_gflops(onednn=True))
        blas_rates.append(_gflops(onednn=False))
    onednn_gflops, blas_gflops = max(onednn_rates), max(blas_rates)
    choice = ProductsChoice(onednn_gflops >= blas_gflops, onednn_gflops, blas_gflops, key, True)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        known[key] = {k: v for k, v in asdict(choice).items() if k != "measured_now"}
        cache.write_text(json.dumps(known, indent=1))
    except OSError:
        pass  # a read-only home: measure again next time
    return choice


def products_choice() -> ProductsChoice:
    """The choice :func:`linear` runs with (measured or read from the cache once per process)."""
    global _chosen
    if _chosen is None:
        _chosen = choose_products()
    return _chosen


_evaluating = False
"""Set while :func:`glimpse_core_sequence` runs without autograd (evaluation, visualisation)."""


def _onednn_now() -> bool:
    """oneDNN or the BLAS for the next product: ``use_onednn`` where set; otherwise oneDNN for
    evaluation wherever it is available, so that a published test error reproduces to the
    last image on any CPU (summing in another order can flip an image on the decision
    boundary), and the measured faster of the two for training."""
    if use_onednn is not None:
        return use_onednn
    return ONEDNN_AVAILABLE if _evaluating else products_choice().onednn


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    relu: bool = False,
    add: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x @ weight.T + bias + add``, then ReLU with ``relu=True``; a new tensor.

    ``weight`` is ``(out, in)`` as in ``F.linear``, ``bias`` ``(out,)``, ``add`` ``(B, out)``;
    ``x`` and ``weight`` may be views (transposes, slices).

    Why not always ``F.linear`` or ``torch.addmm``: on a CPU they call MKL's sgemm for float32,
    which on the AMD EPYC (Zen 5) of our 2-core machines ran at 80 to 95 GFLOP/s per thread at
    RAM's shapes (MKL is known to pick slower code paths on CPUs not made by Intel), where
    oneDNN's AVX-512 kernels, which PyTorch ships for its low-precision and fused paths, ran at
    155 to 175; on Intel Xeons MKL was the faster. Both compute the same float32 arithmetic,
    summed in another order, so :func:`choose_products` measures which to use. With oneDNN the
    bias, the ``add`` and the ReLU ride in the same kernel. Elsewhere (other devices, other
    dtypes such as gradcheck's float64, a build without oneDNN, ``use_onednn = False``) the
    same maths runs through ``torch.addmm``, as it does for empty matrices (a single-glimpse
    episode has no step through time), which oneDNN refuses.
    """
    onednn = x.device.type == "cpu" and x.dtype == torch.float32 and _onednn_now()
    if onednn and x.numel() and weight.numel():  # oneDNN refuses empty matrices
        if not (weight.is_contiguous() or weight.t().is_contiguous()):
            # A slice of a wider matrix (W_hh of [W_hh W_gh]): oneDNN would run its slow
            # reference loop on it (ref:any under ONEDNN_VERBOSE=1); a copy costs far less
            weight = weight.contiguous()
        if add is not None:
            y = torch.ops.mkldnn._linear_pointwise.binary(x, add, weight, bias, "add")
            return y.relu_() if relu else y
        activation = "relu" if relu else "none"
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation, [], "")
    if add is None:
        y = x @ weight.t() if bias is None else torch.addmm(bias, x, weight.t())
    else:
        y = torch.addmm(add if bias is None else add + bias, x, weight.t())
    return y.relu_() if relu else y


def glimpse_core_sequence(
    observe: Observe, horizon: int, glimpse_network: GlimpseNetwork, core_linear: torch.nn.Linear
) -> torch.Tensor:
    """``(T, B, hidden)`` core states of an episode; see :class:`GlimpseCoreSequence`."""
    global _evaluating
    net = glimpse_network
    _evaluating = not torch.is_grad_enabled()
    try:
        return GlimpseCoreSequence.apply(  # type: ignore[no-any-return]
            observe, horizon,
            net.what.weight, net.what.bias, net.where.weight, net.where.bias,
            net.combine.weight, net.combine.bias, core_linear.weight, core_linear.bias,
        )  # fmt: skip
    finally:
        _evaluating = False
