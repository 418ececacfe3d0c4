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
each other and ``torch.autograd.gradcheck``); the training step is faster (see the README's
training-speed table). The glimpses themselves are inputs, not functions of the weights: where
the agent looks is a sampled constant, as in RAM's hybrid loss.

Products are accumulated with ``torch.addmm(c, a, b, out=c)``, not ``c.addmm_(a, b)``: the same
kernel, but ``torch.utils.flop_counter`` counts only the former, and
``benchmarks/train_speed.py`` reports the step's arithmetic with it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.autograd.function import FunctionCtx

from envs.networks import GlimpseNetwork

# observe(h_prev) -> (flattened glimpse (B, D), where (B, W)); h_prev is None at the start
Observe = Callable[[torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


class GlimpseCoreSequence(torch.autograd.Function):
    """``h_1 .. h_T`` of ``g_t = f_g(x_t, l_{t-1})``, ``h_t = ReLU(W_hh h_{t-1} + W_gh g_t + b)``.

    ``observe(h_{t-1})`` returns the next glimpse and location (the agent acts on ``h_{t-1}``
    there, outside the graph); it is called ``horizon`` times, first with ``None`` (``h_0 = 0``).
    The core's weight is ``[W_hh W_gh]``, as in :class:`agents.ram.CoreNetwork`.
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
        hidden, what_units = w_core.shape[0], w_what.shape[0]
        w_hh, w_gh = w_core[:, :hidden].t(), w_core[:, hidden:].t()
        w_what_t, w_where_t, w_combine_t = w_what.t(), w_where.t(), w_combine.t()
        x_t, where_t = observe(None)
        # Every activation is written in place into one (T, B, n) buffer: no copies, no stacks.
        # The per-glimpse views are taken once (unbind), not indexed afresh at every glimpse.
        shape = (horizon, x_t.shape[0])
        features = x_t.new_empty(*shape, what_units + w_where.shape[0])  # [h_g; h_l]
        g, h = x_t.new_empty(*shape, w_combine.shape[0]), x_t.new_empty(*shape, hidden)
        what_views = features[:, :, :what_units].unbind(0)
        where_views = features[:, :, what_units:].unbind(0)
        feature_views, g_views, h_views = features.unbind(0), g.unbind(0), h.unbind(0)
        glimpses, wheres = [], []
        for t in range(horizon):
            h_t = h_views[t]
            if t > 0:
                x_t, where_t = observe(h_views[t - 1])
            torch.addmm(b_what, x_t, w_what_t, out=what_views[t]).relu_()
            torch.addmm(b_where, where_t, w_where_t, out=where_views[t]).relu_()
            torch.addmm(b_combine, feature_views[t], w_combine_t, out=g_views[t]).relu_()
            torch.addmm(b_core, g_views[t], w_gh, out=h_t)
            if t > 0:  # h_0 = 0: no W_hh h_0 at the first glimpse
                torch.addmm(h_t, h_views[t - 1], w_hh, out=h_t)  # += W_hh h_{t-1}
            h_t.relu_()
            glimpses.append(x_t), wheres.append(where_t)
        ctx.save_for_backward(
            torch.stack(glimpses), torch.stack(wheres), features, g, h, w_what, w_combine, w_core
        )
        return h  # (T, B, hidden)

    @staticmethod
    def backward(ctx: FunctionCtx, grad_h: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, where, features, g, h, w_what, w_combine, w_core = ctx.saved_tensors  # type: ignore[attr-defined]
        horizon, hidden = h.shape[0], h.shape[2]
        w_hh, w_gh = w_core[:, :hidden], w_core[:, hidden:]
        # 1. through time: delta_t = dL/d(pre-activation of h_t)
        delta = _relu_backward_(grad_h.clone(), h)  # grad_h belongs to autograd
        for t in range(horizon - 1, 0, -1):
            torch.addmm(delta[t - 1], delta[t], w_hh, out=delta[t - 1])
            _relu_backward_(delta[t - 1], h[t - 1])
        # 2. every weight at once, over all T x B glimpses
        flat = lambda v: v.reshape(-1, v.shape[-1])  # noqa: E731  (T, B, n) -> (T B, n)
        d_core = flat(delta)
        grad_core = torch.cat([flat(delta[1:]).t() @ flat(h[:-1]), d_core.t() @ flat(g)], dim=1)
        d_g = _relu_backward_(d_core @ w_gh, flat(g))
        d_features = _relu_backward_(d_g @ w_combine, flat(features))
        what_units = w_what.shape[0]
        d_what, d_where = d_features[:, :what_units], d_features[:, what_units:]
        return (
            None,
            None,
            d_what.t() @ flat(x),
            d_what.sum(0),
            d_where.t() @ flat(where),
            d_where.sum(0),
            d_g.t() @ flat(features),
            d_g.sum(0),
            grad_core,
            d_core.sum(0),
        )


def _relu_backward_(grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``grad *= [out > 0]``, in place: the gradient through ``out = ReLU(x)``.

    ReLU's own backward kernel, one pass: 42 us against 370 us on one CPU thread at 768 x 256
    for multiplying by the mask ``out > 0``, which builds a bool tensor and converts it to
    float first.
    """
    return torch.ops.aten.threshold_backward.grad_input(grad, out, 0.0, grad_input=grad)


def glimpse_core_sequence(
    observe: Observe, horizon: int, glimpse_network: GlimpseNetwork, core_linear: torch.nn.Linear
) -> torch.Tensor:
    """``(T, B, hidden)`` core states of an episode; see :class:`GlimpseCoreSequence`."""
    net = glimpse_network
    return GlimpseCoreSequence.apply(  # type: ignore[no-any-return]
        observe, horizon,
        net.what.weight, net.what.bias, net.where.weight, net.where.bias,
        net.combine.weight, net.combine.bias, core_linear.weight, core_linear.bias,
    )  # fmt: skip
