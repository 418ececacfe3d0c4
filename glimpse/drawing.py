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


def glimpse_strip(glimpse: np.ndarray, width: int) -> Image.Image:
    """The ``k`` patches of one glimpse ``(k, C, g, g)`` in ``[0, 1]``, side by side, enlarged."""
    k = glimpse.shape[0]
    side = (width - TILE_GAP * (k - 1)) // k
    strip = Image.new("RGB", (width, side), "white")
    for i, patch in enumerate(glimpse):
        pixels = np.clip(patch * 255 + 0.5, 0, 255).astype(np.uint8)
        tile = canvas_to_rgb(pixels, side).resize((side, side), Image.Resampling.NEAREST)
        ImageDraw.Draw(tile).rectangle(
            (0, 0, side - 1, side - 1), outline=SCALE_COLOURS[i % len(SCALE_COLOURS)], width=2
        )
        strip.paste(tile, (i * (side + TILE_GAP), 0))
    return strip


def trajectory_panel(
    canvas: np.ndarray,
    locations: np.ndarray,
    glimpses: np.ndarray,
    step: int,
    patch_origins: np.ndarray,
    patch_sizes: Sequence[int],
    caption: str,
    side: int = 180,
) -> Image.Image:
    """One episode at ``step``: canvas, path so far, boxes, the glimpse itself, a caption.

    ``locations`` ``(T, 2)`` and ``glimpses`` ``(T, k, C, g, g)`` cover the whole episode
    (NaN rows after its end); ``patch_origins`` ``(T, k, 2)`` are the boxes' top-left pixels.
    """
    taken = int(np.sum(~np.isnan(locations[:, 0])))
    t = min(step, taken - 1)
    frame = glimpse_frame(canvas, locations[: t + 1], patch_origins[t], patch_sizes, side)
    frame = frame.resize((side, side), Image.Resampling.NEAREST)
    strip = glimpse_strip(glimpses[t], side)
    panel = Image.new("RGB", (side, side + TILE_GAP + strip.height + CAPTION_HEIGHT), "white")
    panel.paste(frame, (0, 0))
    panel.paste(strip, (0, side + TILE_GAP))
    ImageDraw.Draw(panel).text(
        (2, side + TILE_GAP + strip.height + 2),
        f"t={t + 1}/{taken} {caption}",
        fill="black",
        font=ImageFont.load_default(),
    )
    return panel


def tile(panels: Sequence[Image.Image], columns: int) -> Image.Image:
    """Equal-sized pictures in a grid, ``columns`` per row."""
    width, height = panels[0].size
    rows = -(-len(panels) // columns)
    grid = Image.new(
        "RGB",
        (columns * (width + TILE_GAP) + TILE_GAP, rows * (height + TILE_GAP) + TILE_GAP),
        "white",
    )
    for i, panel in enumerate(panels):
        grid.paste(
            panel,
            (
                TILE_GAP + (i % columns) * (width + TILE_GAP),
                TILE_GAP + (i // columns) * (height + TILE_GAP),
            ),
        )
    return grid


FOCUS = 4.0  # attention_grid: weight relative to uniform that shows as full red


def attention_panel(
    canvas: np.ndarray, alpha: np.ndarray, caption: str = "", side: int = 120
) -> Image.Image:
    """The canvas tinted by one step of soft attention ``alpha`` ``(h, w)`` (sums to 1).

    A cell is tinted red in proportion to its weight relative to uniform attention: full red
    at ``FOCUS`` times the uniform weight or more, so attention spread evenly shows as a faint
    tint and a sharp focus as a red spot. A caption, when given, goes under the picture.
    """
    base = np.asarray(canvas_to_rgb(canvas, side).resize((side, side))).astype(np.float32)
    relative = np.clip(alpha * alpha.size / FOCUS, 0.0, 1.0)
    heat = Image.fromarray((255 * relative).astype(np.uint8))
    heat = np.asarray(heat.resize((side, side), Image.Resampling.BILINEAR)) / 255.0
    tinted = base * (0.35 + 0.65 * heat[..., None])
    tinted[..., 0] = np.maximum(tinted[..., 0], 255 * heat)
    picture = Image.fromarray(tinted.clip(0, 255).astype(np.uint8))
    if not caption:
        return picture
    panel = Image.new("RGB", (side, side + CAPTION_HEIGHT), "white")
    panel.paste(picture, (0, 0))
    ImageDraw.Draw(panel).text((2, side + 2), caption, fill="black", font=ImageFont.load_default())
    return panel


def attention_grid(
    canvases: np.ndarray, weights: np.ndarray, captions: Sequence[str] | None = None,
    side: int = 120,
) -> Image.Image:  # fmt: skip
    """Soft attention over the canvas: one row per canvas, one column per step.

    ``canvases`` ``(n, C, H, W)`` uint8; ``weights`` ``(n, T, h, w)``, each step summing to 1
    over its ``h x w`` cells (drawn as in :func:`attention_panel`); ``captions``, one per
    canvas, go under each of its steps.
    """
    steps = weights.shape[1]
    panels = []
    for i, (canvas, alphas) in enumerate(zip(canvases, weights, strict=True)):
        for t, alpha in enumerate(alphas):
            text = f"t={t + 1}/{steps}" + (f" {captions[i]}" if captions is not None else "")
            panels.append(attention_panel(canvas, alpha, text, side))
    return tile(panels, steps)
