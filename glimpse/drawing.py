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
