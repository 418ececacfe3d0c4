"""The foveated glimpse sensor: ``k`` square patches around a location, each averaged to ``g x g``.

Conventions (users compare against these, so they are exact):

* A location is ``(x, y)`` in ``[-1, 1]^2``: ``(0, 0)`` is the image centre, ``(-1, -1)`` the
  top-left corner of the image, ``(1, 1)`` the bottom-right corner. Locations outside the square
  are clipped to it.
* Pixel column ``j`` spans the continuous interval ``[j, j + 1)``, so ``x`` maps to the continuous
  column ``(x + 1) * W / 2`` (``W`` the image width; rows likewise with ``y`` and ``H``).
* Patch ``i`` (``i = 0 .. k-1``) has side ``P_i = g * s**i`` pixels. Its first column is
  ``x0 = floor(((x + 1) * W - P_i + 1) / 2)``, i.e. the continuous centre minus ``P_i / 2``,
  rounded half up; it covers columns ``x0 .. x0 + P_i - 1`` (rows likewise). With an even ``W``
  and an even ``P_i`` the patch at ``x = 0`` is exactly centred; otherwise it is half a pixel
  right of (or below) the continuous centre, which is the best an integer grid can do.
* Patch ``i`` is cut into ``g x g`` blocks of ``s**i x s**i`` pixels and each block is replaced by
  its mean. Pixels outside the image count as 0 and still count in the block's area, so a glimpse
  that hangs over the border darkens, as in the paper.
* ``uint8`` images are read as ``value / 255``; floating images as they are. The output is
  ``float32`` of shape ``(B, k, C, g, g)``.

How it is fast: the sensor reads a summed-area table (integral image), built once per image and
reused for every glimpse of an episode. Each block mean is four table lookups, so a glimpse costs
``k * C * (g + 1)**2`` lookups whatever the patch area: a 96 x 96 patch costs what a 12 x 12 one
does. Border handling is free: clamping a lookup to the table's edge is exactly "outside pixels
are 0". The table is exact, not approximately right: ``uint8`` images are summed as integers held
in ``float32`` (exact while ``255 * H * W <= 2**24``, i.e. up to 256 x 256 pixels; larger images
use ``float64``), floating images are summed in ``float64``.

Example::

    sensor = GlimpseSensor(glimpse_size=12, num_scales=3, scale_factor=2)
    table = sensor.integral(canvases)            # once per episode, (B, C, H+1, W+1)
    g_t = sensor.read(table, locations)          # every step, (B, 3, C, 12, 12)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from glimpse.errors import ConfigError

_FLOAT32_EXACT_LIMIT = 2**24
_CACHE_FRIENDLY_BYTES = 8 * 2**20  # slice of the table summed at a time (fits a CPU's L3)
SLICED_READ_PATCHES = 8  # read() by strided views up to this many patches (batch x scales)


@dataclass
class IntegralImages:
    """Summed-area tables of a batch of images, the sensor's per-episode state.

    ``table[b, c, y, x]`` is the sum of ``image[b, c, :y, :x]`` (so row 0 and column 0 are 0).
    ``value_scale`` turns a block mean of the stored values into the ``[0, 1]`` scale the
    sensor returns (``1 / 255`` for ``uint8`` images, ``1`` for floating ones).
    """

    table: torch.Tensor
    value_scale: float
    _padded: tuple[int, torch.Tensor] | None = field(default=None, repr=False)

    def edge_padded(self, margin: int) -> torch.Tensor:
        """The table with ``margin`` rows and columns of its edges repeated on every side:
        looking up ``padded[..., y + margin, x + margin]`` is looking up ``table`` at ``y`` and
        ``x`` clamped to it, which is how the sensor treats pixels outside the image. Built on
        first use and kept: code that writes into ``table`` must wrap it in a new
        ``IntegralImages`` afterwards (as :class:`glimpse.envs.episodes.GlimpseEpisodes` does)."""
        if self._padded is None or self._padded[0] != margin:
            padded = torch.nn.functional.pad(self.table, (margin,) * 4, mode="replicate")
            self._padded = (margin, padded)
        return self._padded[1]

    @property
    def height(self) -> int:
        return self.table.shape[-2] - 1

    @property
    def width(self) -> int:
        return self.table.shape[-1] - 1


@dataclass(frozen=True)
class FramedImages:
    """A few images made ready for a few glimpses each, what :meth:`GlimpseSensor.read_framed`
    reads: either their summed-area table edge-padded by ``margin``
    (:meth:`IntegralImages.edge_padded`) or, where summing the patches' own pixels is less work
    than building that table, the pixels framed by ``margin`` zeros (``from_pixels``).

    ``frame`` ``(B, C, H + 2 margin [+ 1], W + 2 margin [+ 1])``; ``block_weights``
    ``(k, 1, 1, 1)``: each scale's ``value_scale / block area`` in the table's dtype, so that
    both sources weight their block sums alike.
    """

    frame: torch.Tensor
    from_pixels: bool
    block_weights: torch.Tensor
    height: int
    width: int
    margin: int
    patch_sizes: tuple[int, ...]  # the sensor's, so that another sensor cannot misread them
    block_sizes: tuple[int, ...]


def _table_dtype(images: torch.Tensor) -> tuple[torch.dtype, float]:
    """The dtype in which ``images`` ``(B, C, H, W)`` are summed and the ``value_scale`` that
    turns their values into ``[0, 1]``; a clear error for a wrong shape or type."""
    if images.ndim != 4:
        raise ConfigError(
            f"Images must have shape (B, C, H, W); got shape {tuple(images.shape)}. "
            f"Add the batch or channel axis (for example images[None] or images[:, None])."
        )
    height, width = images.shape[-2:]
    if images.dtype == torch.uint8:
        exact_in_float32 = 255 * height * width <= _FLOAT32_EXACT_LIMIT
        return (torch.float32 if exact_in_float32 else torch.float64), 1.0 / 255.0
    if images.is_floating_point():
        return torch.float64, 1.0
    raise ConfigError(
        f"Images must be uint8 (0..255) or floating point; got {images.dtype}. "
        f"Convert them with images.to(torch.uint8) or images.float()."
    )


def _check_locations(locations: torch.Tensor) -> None:
    """Locations must be ``(B, 2)`` numbers: a clear error otherwise."""
    if locations.ndim != 2 or locations.shape[1] != 2:
        raise ConfigError(
            f"Locations must have shape (B, 2) holding (x, y) in [-1, 1]; got shape "
            f"{tuple(locations.shape)}."
        )
    if torch.isnan(locations).any():
        raise ConfigError("A glimpse location is NaN; locations must be numbers in [-1, 1].")


@dataclass(frozen=True)
class _Geometry:
    """What :meth:`GlimpseSensor.patch_origins` and :meth:`GlimpseSensor.read` need for one
    device and image size ``H x W``, built once: a read is then about thirty tensor operations,
    and on small batches their count, not the arithmetic, sets its time."""

    half_sides: torch.Tensor  # (1, 1, 2) float64: (W / 2, H / 2)
    origin_shifts: torch.Tensor  # (1, k, 2) float64: ((W, H) - P_i + 1) / 2
    corner_offsets: torch.Tensor  # (k, g+1) int64: block corners relative to a patch origin


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(
            f"Invalid glimpse sensor setting {name}={value!r}: it must be a whole number >= 1 "
            f"(for example glimpse_size=8, num_scales=3, scale_factor=2). Fix the value passed "
            f"to GlimpseSensor or the matching command-line option."
        )
    return int(value)


class GlimpseSensor:
    """Extracts foveated glimpses from batches of images; see the module docstring.

    Args:
        glimpse_size: ``g``, the side of every patch after averaging.
        num_scales: ``k``, how many concentric patches.
        scale_factor: ``s``, patch ``i`` has side ``g * s**i`` pixels (an integer >= 1).
    """

    def __init__(self, glimpse_size: int = 8, num_scales: int = 1, scale_factor: int = 2) -> None:
        self.glimpse_size = _positive_int("glimpse_size", glimpse_size)
        self.num_scales = _positive_int("num_scales", num_scales)
        self.scale_factor = _positive_int("scale_factor", scale_factor)
        self.block_sizes = tuple(self.scale_factor**i for i in range(self.num_scales))
        self.patch_sizes = tuple(self.glimpse_size * b for b in self.block_sizes)
        self._geometries: dict[tuple[torch.device, int, int], _Geometry] = {}
        self._weights: dict[tuple[torch.device, torch.dtype, float], torch.Tensor] = {}

    def __repr__(self) -> str:
        return (
            f"GlimpseSensor(glimpse_size={self.glimpse_size}, num_scales={self.num_scales}, "
            f"scale_factor={self.scale_factor})"
        )

    def integral(self, images: torch.Tensor) -> IntegralImages:
        """Builds the summed-area tables of ``images`` ``(B, C, H, W)``, ``uint8`` or floating."""
        dtype, value_scale = _table_dtype(images)
        # Pad first (row 0 and column 0 of the table are 0), then sum in place, a slice of the
        # batch at a time: fresh multi-megabyte temporaries and cache misses cost more than the
        # additions themselves on a CPU (2x at 1,024 images of 100 x 100).
        table = torch.nn.functional.pad(images, (1, 0, 1, 0)).to(dtype)
        chunk = max(1, _CACHE_FRIENDLY_BYTES // table[0].nbytes)
        for start in range(0, table.shape[0], chunk):
            table[start : start + chunk].cumsum_(dim=2).cumsum_(dim=3)
        return IntegralImages(table=table, value_scale=value_scale)

    def _geometry(self, device: torch.device, height: int, width: int) -> _Geometry:
        key = (device, height, width)
        if key not in self._geometries:
            sides = torch.tensor((width, height), dtype=torch.float64, device=device)
            sizes = torch.tensor(self.patch_sizes, dtype=torch.float64, device=device)[:, None]
            blocks = torch.tensor(self.block_sizes, device=device)
            steps = torch.arange(self.glimpse_size + 1, device=device)
            self._geometries[key] = _Geometry(
                half_sides=(sides / 2.0).view(1, 1, 2),
                origin_shifts=((sides - sizes + 1.0) / 2.0)[None],
                corner_offsets=blocks[:, None] * steps,
            )
        return self._geometries[key]

    def _block_weights(self, integral: IntegralImages) -> torch.Tensor:
        """``value_scale / block area`` of every scale, ``(1, k, 1, 1, 1)`` in the table's dtype."""
        table = integral.table
        return self._weights_in(table.device, table.dtype, integral.value_scale)

    def _weights_in(
        self, device: torch.device, dtype: torch.dtype, value_scale: float
    ) -> torch.Tensor:
        key = (device, dtype, value_scale)
        if key not in self._weights:
            areas = torch.tensor(self.block_sizes, dtype=dtype, device=device) ** 2
            self._weights[key] = (value_scale / areas).view(1, -1, 1, 1, 1)
        return self._weights[key]

    def patch_origins(self, locations: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Top-left pixel ``(x0, y0)`` of every patch, ``(B, k, 2)`` int64 (may lie outside)."""
        return self._origins(locations, self._geometry(locations.device, height, width))

    @staticmethod
    def _origins(locations: torch.Tensor, geometry: _Geometry) -> torch.Tensor:
        """:meth:`patch_origins` with the geometry already looked up (one lookup per read)."""
        _check_locations(locations)
        loc = locations.to(torch.float64).clamp(-1.0, 1.0).unsqueeze(1)  # (B, 1, 2)
        # floor(((x + 1) W - P + 1) / 2) = floor(x W / 2 + (W - P + 1) / 2), exact in float64:
        # a float32 location times half an image side loses no bits, nor does the sum.
        # a product, then a sum, as read_framed computes it in Python (a fused
        # addcmul rounds once, which differs for float64 locations on a half pixel)
        origins = loc * geometry.half_sides + geometry.origin_shifts
        return origins.floor_().long()  # (B, k, 2)

    def read(self, integral: IntegralImages, locations: torch.Tensor) -> torch.Tensor:
        """Glimpses ``(B, k, C, g, g)`` float32 at ``locations`` ``(B, 2)``."""
        table = integral.table
        batch, channels = table.shape[:2]
        height, width = integral.height, integral.width
        if locations.shape[0] != batch:
            raise ConfigError(
                f"Got {locations.shape[0]} locations for {batch} images; pass one (x, y) per image."
            )
        if batch * self.num_scales <= SLICED_READ_PATCHES and table.device.type == "cpu":
            return self._read_sliced(integral, locations)
        geometry = self._geometry(table.device, height, width)
        origins = self._origins(locations.to(table.device), geometry)  # (B, k, 2)
        x0, y0 = origins.unsqueeze(-1).unbind(2)  # (B, k, 1) each
        offsets = geometry.corner_offsets  # (k, g+1)
        cols = (x0 + offsets).clamp_(0, width)  # (B, k, g+1)
        rows = (y0 + offsets).clamp_(0, height).mul_(width + 1)  # flat offsets of the rows
        # Each image's channel planes folded into the (small) row offsets, so only one
        # full-size index tensor is ever built.
        plane = (height + 1) * (width + 1)
        planes = torch.arange(0, batch * channels * plane, plane, device=table.device)
        rows = rows.unsqueeze(2) + planes.view(batch, 1, channels, 1)  # (B, k, C, g+1)
        index = rows.unsqueeze(-1) + cols[:, :, None, None, :]  # (B, k, C, g+1, g+1)
        # index_select on a flat index: the same lookups as take(), 2x faster on a CPU.
        corner_sums = table.reshape(-1).index_select(0, index.view(-1)).view(index.shape)
        block_sums = corner_sums.diff(dim=-1).diff(dim=-2)  # (B, k, C, g, g)
        return block_sums.mul_(self._block_weights(integral)).to(torch.float32)

    def _read_sliced(self, integral: IntegralImages, locations: torch.Tensor) -> torch.Tensor:
        """:meth:`read` for a few patches (one image's glimpse, say): the same numbers by
        another route, :func:`read_framed` on the edge-padded table."""
        _check_locations(locations)
        margin = self.patch_margin()
        return read_framed(
            integral.edge_padded(margin), False, locations, self._block_weights(integral)[0],
            list(self.patch_sizes), list(self.block_sizes), integral.height, integral.width,
            margin,
        )  # fmt: skip

    def frame(self, images: torch.Tensor, reads: int) -> FramedImages:
        """``images`` ``(B, C, H, W)`` (``uint8`` or floating) made ready for ``reads`` glimpses
        each by :meth:`read_framed`, from whichever source is less work, counted in pixels
        touched: the summed-area table (built by two passes over the image, then copied with
        its edges) or the patches' own pixels (``reads x sum of P_i**2``, whatever the image's
        size). With 8 glimpses of 12 x 12 at 4 scales the table is less work up to 140 x 140
        pixels and the pixels beyond, so RAM's cost per answer stops growing with
        the canvas."""
        dtype, value_scale = _table_dtype(images)
        if isinstance(reads, bool) or not isinstance(reads, (int, np.integer)) or reads < 1:
            raise ConfigError(
                f"reads={reads!r}: pass how many glimpses each image will have read, a whole "
                f"number >= 1 (RAM's glimpse budget)."
            )
        height, width = images.shape[-2:]
        margin = self.patch_margin()
        table_work = 2 * (height + 1) * (width + 1) + (height + 1 + 2 * margin) * (
            width + 1 + 2 * margin
        )
        from_pixels = reads * sum(side * side for side in self.patch_sizes) < table_work
        if from_pixels:
            frame = torch.nn.functional.pad(images, (margin,) * 4)
        else:
            frame = self.integral(images).edge_padded(margin)
        weights = self._weights_in(images.device, dtype, value_scale)[0]
        return FramedImages(
            frame, from_pixels, weights, height, width, margin, self.patch_sizes, self.block_sizes
        )

    def read_framed(self, framed: FramedImages, locations: torch.Tensor) -> torch.Tensor:
        """Glimpses ``(B, k, C, g, g)`` float32 at ``locations`` ``(B, 2)`` from
        :meth:`frame`'s images: the very numbers :meth:`read` gives for ``uint8`` images (for
        floating ones, the same to float64 rounding)."""
        _check_locations(locations)
        if (framed.patch_sizes, framed.block_sizes) != (self.patch_sizes, self.block_sizes):
            raise ConfigError(
                f"These images were framed by another sensor (patches {framed.patch_sizes}, "
                f"this one reads {self.patch_sizes}); frame them with the sensor that reads them."
            )
        if locations.shape[0] != framed.frame.shape[0]:
            raise ConfigError(
                f"Got {locations.shape[0]} locations for {framed.frame.shape[0]} images; pass "
                f"one (x, y) per image."
            )
        return read_framed(
            framed.frame, framed.from_pixels, locations, framed.block_weights,
            list(self.patch_sizes), list(self.block_sizes), framed.height, framed.width,
            framed.margin,
        )  # fmt: skip

    def patch_margin(self) -> int:
        """How far outside the image a patch's block corners can reach: the edge padding that
        :func:`read_framed` reads from the table, and the frame of zeros it reads pixels from."""
        return self.patch_sizes[-1] // 2 + 1

    def extract(self, images: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        """One glimpse per image: ``read(integral(images), locations)``."""
        return self.read(self.integral(images), locations)

    def extract_numpy(self, images: np.ndarray, locations: np.ndarray) -> np.ndarray:
        """:meth:`extract` for numpy arrays (no copy on the way in where the layout allows)."""
        tensor_images = torch.from_numpy(np.ascontiguousarray(images))
        tensor_locations = torch.from_numpy(np.asarray(locations, dtype=np.float32))
        return self.extract(tensor_images, tensor_locations).numpy()


def read_framed(
    frame: torch.Tensor,
    from_pixels: bool,
    locations: torch.Tensor,
    block_weights: torch.Tensor,
    sides: list[int],
    blocks: list[int],
    height: int,
    width: int,
    margin: int,
) -> torch.Tensor:
    """Glimpses ``(B, k, C, g, g)`` float32 at ``locations`` ``(B, 2)``, by views of ``frame``:
    the summed-area table edge-padded by ``margin`` (:meth:`IntegralImages.edge_padded`, what
    clamping a lookup does), or with ``from_pixels`` the pixels framed by ``margin`` zeros
    (:meth:`GlimpseSensor.frame`; zeros are what the sensor counts outside the image).

    The origins are computed as Python numbers, exactly as :meth:`GlimpseSensor._origins` does
    in float64, and no index tensor is built: about ten tensor operations a glimpse instead of
    thirty, which is what a glimpse costs at batch 1. From the table a patch's block corners
    are a strided view and its block sums their differences; from the pixels a patch is a view
    whose blocks ``avg_pool2d`` sums (divisor 1). For ``uint8`` pixels every sum is a whole
    number held exactly, so both sources give bitwise the same glimpses; for floating pixels
    they agree to float64 rounding. The pixels' work is the patches' (12,240 pixels a glimpse
    at 12 x 12 and 4 scales) whatever the image's size. ``block_weights`` ``(k, 1, 1, 1)`` is
    each scale's ``value_scale / block area`` in the table's dtype; ``sides`` and ``blocks`` the
    patch and block sides. Written in the subset of Python that TorchScript compiles, so RAM's
    compiled episode (:mod:`glimpse.agents.ram`) reads glimpses with the same code.
    """
    # uint8 block sums are whole numbers, exact in float32 below 2**24
    small = frame.dtype == torch.uint8 and 255 * blocks[-1] * blocks[-1] <= 2**24
    sum_dtype = torch.float32 if small else torch.float64
    corner = 0 if from_pixels else 1  # a table's last block corner lies past the patch
    parts: list[torch.Tensor] = []
    points: list[list[float]] = locations.tolist()
    for image in range(len(points)):
        x = min(max(points[image][0], -1.0), 1.0)
        y = min(max(points[image][1], -1.0), 1.0)
        for i in range(len(sides)):
            side, block = sides[i], blocks[i]
            # floor(x W / 2 + (W - P + 1) / 2): both terms exact in float64, as in _origins;
            # int() for TorchScript, whose floor of a float is a float
            x0 = int(math.floor(x * (width / 2.0) + (width - side + 1) / 2.0)) + margin  # noqa: RUF046
            y0 = int(math.floor(y * (height / 2.0) + (height - side + 1) / 2.0)) + margin  # noqa: RUF046
            if from_pixels:
                patch = frame[image, :, y0 : y0 + side, x0 : x0 + side].to(sum_dtype)
                if block > 1:
                    patch = torch.nn.functional.avg_pool2d(patch, block, divisor_override=1)
                parts.append(patch)
            else:
                parts.append(frame[image, :, y0 : y0 + side + corner : block,
                                   x0 : x0 + side + corner : block])  # fmt: skip
    g = sides[0]
    stacked = torch.stack(parts).view(len(points), len(sides), -1, g + corner, g + corner)
    if from_pixels:
        block_sums = stacked.to(block_weights.dtype)
    else:
        block_sums = stacked.diff(dim=-1).diff(dim=-2)  # (B, k, C, g, g)
    return block_sums.mul_(block_weights).to(torch.float32)
