"""Networks that read the glimpse observation, shared by the agents (RAM, the SB3 extractors)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class GlimpseNetwork(nn.Module):
    """The glimpse network of Mnih et al. (2014), which turns a glimpse into ``g_t``.

    ``h_g = ReLU(W_g rho(x_t, l_{t-1}))``, ``h_l = ReLU(W_l l_{t-1})``,
    ``g_t = ReLU(W_hg h_g + W_hl h_l)``, with 128, 128 and 256 units by default. ``where``
    holds the location, and optionally more position features (the step index). The two maps
    ``W_hg`` and ``W_hl`` are stored as one ``Linear`` on ``[h_g; h_l]``: the same function with
    one matrix product instead of two, which matters on a CPU at PPO's small batches.
    """

    def __init__(
        self,
        glimpse_shape: Sequence[int],
        where_dim: int = 2,
        what_units: int = 128,
        where_units: int = 128,
        out_units: int = 256,
    ) -> None:
        super().__init__()
        self.what = nn.Linear(int(np.prod(glimpse_shape)), what_units)  # W_g
        self.where = nn.Linear(where_dim, where_units)  # W_l
        self.combine = nn.Linear(what_units + where_units, out_units)  # [W_hg W_hl]
        self.out_units = out_units

    def forward(self, glimpse: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        return glimpse_features(
            glimpse.flatten(1), where, self.what.weight, self.what.bias, self.where.weight,
            self.where.bias, self.combine.weight, self.combine.bias,
        )  # fmt: skip


def glimpse_features(
    glimpse: torch.Tensor,
    where: torch.Tensor,
    what_weight: torch.Tensor,
    what_bias: torch.Tensor,
    where_weight: torch.Tensor,
    where_bias: torch.Tensor,
    combine_weight: torch.Tensor,
    combine_bias: torch.Tensor,
) -> torch.Tensor:
    """:class:`GlimpseNetwork`'s function on a flat glimpse ``(B, k C g g)``: ``g_t`` ``(B, out)``.

    A function of the weights (TorchScript compiles it into RAM's inference episode), calling
    ``F.linear`` as the layers would, without the module call's overhead.
    """
    h_g = F.linear(glimpse, what_weight, what_bias).relu_()  # (B, what_units)
    h_l = F.linear(where, where_weight, where_bias).relu_()  # (B, where_units)
    return F.linear(torch.cat([h_g, h_l], dim=1), combine_weight, combine_bias).relu_()


class ConvGlimpseNetwork(GlimpseNetwork):
    """A convolutional glimpse network: :class:`GlimpseNetwork` with ``h_g`` read by two
    convolutions instead of one linear map of the flattened glimpse.

    The ``k`` scales of a glimpse are patches of the same ``g x g`` size around one point, so
    they are stacked as ``k C`` channels of one image: ``h_g = ReLU(W_g flatten(conv_2(conv_1(
    x))))`` with 3 x 3 convolutions of ``channels`` filters (the second of stride 2), each
    followed by a ReLU; ``W_g`` and the rest are :class:`GlimpseNetwork`'s, on the
    convolutions' output. Its ``forward`` takes the flattened glimpse ``(B, k C g g)`` too.
    """

    def __init__(
        self,
        glimpse_shape: Sequence[int],
        where_dim: int = 2,
        what_units: int = 128,
        where_units: int = 128,
        out_units: int = 256,
        channels: int = 32,
    ) -> None:
        *stacked, height, width = glimpse_shape
        after = channels * ((height + 1) // 2) * ((width + 1) // 2)
        super().__init__((after,), where_dim, what_units, where_units, out_units)
        self.image_shape = (int(np.prod(stacked)), height, width)
        self.convolutions = nn.Sequential(
            nn.Conv2d(self.image_shape[0], channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        )

    def forward(self, glimpse: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        return super().forward(self.convolutions(glimpse.reshape(-1, *self.image_shape)), where)
