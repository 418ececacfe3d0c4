"""Pictures of canvases: labelled grids (Pillow only, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CAPTION_HEIGHT = 16
TILE_GAP = 4


def canvas_to_rgb(canvas: np.ndarray, min_side: int = 112) -> Image.Image:
    """A ``(C, H, W)`` uint8 canvas as RGB, enlarged (nearest) to at least ``min_side`` px."""
    array = canvas[0] if canvas.shape[0] == 1 else canvas.transpose(1, 2, 0)
    image = Image.fromarray(np.ascontiguousarray(array)).convert("RGB")
    zoom = max(1, -(-min_side // max(image.size)))  # ceiling division
    return image.resize((image.width * zoom, image.height * zoom), Image.Resampling.NEAREST)


def canvas_grid(
    canvases: np.ndarray, captions: Sequence[str], columns: int = 4, min_side: int = 112
) -> Image.Image:
    """A grid of ``(N, C, H, W)`` uint8 canvases with a caption under each."""
    tiles = [canvas_to_rgb(c, min_side) for c in canvases]
    tile_w, tile_h = tiles[0].size
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    cell_w, cell_h = tile_w + TILE_GAP, tile_h + CAPTION_HEIGHT + TILE_GAP
    grid = Image.new("RGB", (columns * cell_w + TILE_GAP, rows * cell_h + TILE_GAP), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for i, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
        x = TILE_GAP + (i % columns) * cell_w
        y = TILE_GAP + (i // columns) * cell_h
        grid.paste(tile, (x, y))
        draw.text((x, y + tile_h + 2), caption, fill="black", font=font)
    return grid


SCALE_COLOURS = ((255, 70, 70), (255, 190, 0), (70, 200, 255), (150, 255, 90))
PATH_COLOUR = (0, 255, 140)


def glimpse_frame(
    canvas: np.ndarray,
    visited: np.ndarray,
    origins: np.ndarray,
    patch_sizes: Sequence[int],
    min_side: int = 240,
) -> Image.Image:
    """The canvas with the path of ``visited`` locations ``(t, 2)`` and the current glimpse.

    ``origins`` ``(k, 2)`` are the top-left pixels of the current glimpse's patches (from
    :meth:`glimpse.sensor.GlimpseSensor.patch_origins`); each scale gets its own colour.
    """
    image = canvas_to_rgb(canvas, min_side)
    height, width = canvas.shape[-2:]
    zoom = image.width / width
    draw = ImageDraw.Draw(image)
    centres = [((x + 1) / 2 * width * zoom, (y + 1) / 2 * height * zoom) for x, y in visited]
    if len(centres) > 1:
        draw.line(centres, fill=PATH_COLOUR, width=2)
    for cx, cy in centres:
        draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), outline=PATH_COLOUR, width=2)
    for i, ((x0, y0), side) in enumerate(zip(origins, patch_sizes, strict=True)):
        box = (x0 * zoom, y0 * zoom, (x0 + side) * zoom - 1, (y0 + side) * zoom - 1)
        draw.rectangle(box, outline=SCALE_COLOURS[i % len(SCALE_COLOURS)], width=2)
    return image
