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
        hidden = w_core.shape[0]
        glimpses, wheres, features, g, h = [], [], [], [], []
        h_t: torch.Tensor | None = None
        for _ in range(horizon):
            x_t, where_t = observe(h_t)
            h_g = torch.addmm(b_what, x_t, w_what.t()).relu_()
            h_l = torch.addmm(b_where, where_t, w_where.t()).relu_()
            features_t = torch.cat([h_g, h_l], dim=1)
            g_t = torch.addmm(b_combine, features_t, w_combine.t()).relu_()
            if h_t is None:  # h_0 = 0: only W_gh g_1
                h_t = torch.addmm(b_core, g_t, w_core[:, hidden:].t()).relu_()
            else:
                h_t = torch.addmm(b_core, torch.cat([h_t, g_t], dim=1), w_core.t()).relu_()
            glimpses.append(x_t), wheres.append(where_t), features.append(features_t)
            g.append(g_t), h.append(h_t)
        stacked = [torch.stack(v) for v in (glimpses, wheres, features, g, h)]
        ctx.save_for_backward(*stacked, w_what, w_combine, w_core)
        return stacked[-1]  # (T, B, hidden)

    @staticmethod
    def backward(ctx: FunctionCtx, grad_h: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, where, features, g, h, w_what, w_combine, w_core = ctx.saved_tensors  # type: ignore[attr-defined]
        horizon, hidden = h.shape[0], h.shape[2]
        w_hh, w_gh = w_core[:, :hidden], w_core[:, hidden:]
        # 1. through time: delta_t = dL/d(pre-activation of h_t)
        active = h > 0  # where the rectifier passes gradient
        delta = grad_h.mul(active)
        for t in range(horizon - 1, 0, -1):
            delta[t - 1].addmm_(delta[t], w_hh).mul_(active[t - 1])
        # 2. every weight at once, over all T x B glimpses
        flat = lambda v: v.reshape(-1, v.shape[-1])  # noqa: E731  (T, B, n) -> (T B, n)
        d_core = flat(delta)
        grad_core = torch.cat([flat(delta[1:]).t() @ flat(h[:-1]), d_core.t() @ flat(g)], dim=1)
        d_g = (d_core @ w_gh).mul_(flat(g) > 0)
        d_features = (d_g @ w_combine).mul_(flat(features) > 0)
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
