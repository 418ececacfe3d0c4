"""Pictures of canvases: labelled grids, glimpse trajectories, soft attention (Pillow only, no
display needed)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CAPTION_HEIGHT = 16
TILE_GAP = 4
TEXT_SIZE = 11
TITLE_SIZE = 15
TITLE_HEIGHT = 24  # with_header's title line


@functools.cache
def font(size: int = TEXT_SIZE) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` px, or its one fixed-size bitmap font where Pillow
    cannot scale it (before 10.1, or built without FreeType): smaller, but still readable."""
    try:
        return ImageFont.load_default(size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


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
    for i, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
        x = TILE_GAP + (i % columns) * cell_w
        y = TILE_GAP + (i // columns) * cell_h
        grid.paste(tile, (x, y))
        draw.text((x, y + tile_h + 2), caption, fill="black", font=font())
    return grid


SCALE_COLOURS = ((255, 70, 70), (255, 190, 0), (70, 200, 255), (150, 255, 90))
PATH_COLOUR = (0, 255, 140)
EMPTY_COLOUR = (175, 175, 175)  # light enough to read on black, grey so it is not ink
ANSWER_COLOURS = {True: (20, 130, 50), False: (200, 30, 30)}  # the band behind a right/wrong answer
EMPTY_INK = 0.1
"""A glimpse cell brighter than this (in ``[0, 1]``, any channel) holds ink."""
EMPTY_SHARE = 0.05
"""A patch with fewer inked cells than this share lies wholly or mostly on blank canvas (or off
the canvas): drawn black but for a stray stroke, so it is marked ``empty`` to say why."""


def empty_patches(glimpse: np.ndarray) -> np.ndarray:
    """Which of the ``k`` patches of one glimpse ``(k, C, g, g)`` in ``[0, 1]`` are empty:
    fewer than :data:`EMPTY_SHARE` of their cells brighter than :data:`EMPTY_INK`; ``(k,)``."""
    inked = glimpse.max(axis=1) > EMPTY_INK  # (k, g, g)
    return inked.mean(axis=(1, 2)) < EMPTY_SHARE


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


def glimpse_strip(glimpse: np.ndarray, width: int, mark_empty: bool = True) -> Image.Image:
    """The ``k`` patches of one glimpse ``(k, C, g, g)`` in ``[0, 1]``, side by side, enlarged;
    with ``mark_empty``, an empty patch (:func:`empty_patches`) says ``empty`` (or ``mostly
    empty``, with a stray stroke) across its middle. A game's screen is mostly blank by nature
    (a ball and a paddle), so there the mark would only hide the ball: games draw without it."""
    k = glimpse.shape[0]
    side = (width - TILE_GAP * (k - 1)) // k
    strip = Image.new("RGB", (width, side), "white")
    empties = empty_patches(glimpse) & mark_empty
    for i, (patch, empty) in enumerate(zip(glimpse, empties, strict=True)):
        pixels = np.clip(patch * 255 + 0.5, 0, 255).astype(np.uint8)
        tile = canvas_to_rgb(pixels, side).resize((side, side), Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(tile)
        draw.rectangle(
            (0, 0, side - 1, side - 1), outline=SCALE_COLOURS[i % len(SCALE_COLOURS)], width=2
        )
        if empty:
            text = "empty" if patch.max() <= EMPTY_INK else "mostly empty"
            if font().getlength(text) > side - 8:  # a small tile of several scales
                text = text.replace(" ", "\n")
            draw.multiline_text((side / 2, side / 2), text, fill=EMPTY_COLOUR, font=font(),
                                anchor="mm", align="center")  # fmt: skip
        strip.paste(tile, (i * (side + TILE_GAP), 0))
    return strip


def trajectory_panel(
    canvas: np.ndarray,
    locations: np.ndarray,
    glimpses: np.ndarray,
    step: int,
    patch_origins: np.ndarray,
    patch_sizes: Sequence[int],
    answer: str,
    correct: bool,
    side: int = 180,
    mark_empty: bool = True,
) -> Image.Image:
    """One episode at ``step``: canvas, path so far, boxes, the glimpse itself, a caption.

    ``locations`` ``(T, 2)`` and ``glimpses`` ``(T, k, C, g, g)`` cover the whole episode
    (NaN rows after its end); ``patch_origins`` ``(T, k, 2)`` are the boxes' top-left pixels.
    The caption counts the steps; from the episode's last step on, when the agent gives it,
    it also shows ``answer`` on a band coloured by ``correct`` (:data:`ANSWER_COLOURS`).
    ``mark_empty``: see :func:`glimpse_strip`.
    """
    taken = int(np.sum(~np.isnan(locations[:, 0])))
    t = min(step, taken - 1)
    frame = glimpse_frame(canvas, locations[: t + 1], patch_origins[t], patch_sizes, side)
    frame = frame.resize((side, side), Image.Resampling.NEAREST)
    strip = glimpse_strip(glimpses[t], side, mark_empty)
    top = side + TILE_GAP + strip.height
    panel = Image.new("RGB", (side, top + CAPTION_HEIGHT), "white")
    panel.paste(frame, (0, 0))
    panel.paste(strip, (0, side + TILE_GAP))
    draw = ImageDraw.Draw(panel)
    caption, ink = f"t={t + 1}/{taken}", "black"
    if t == taken - 1:
        draw.rectangle((0, top, side - 1, top + CAPTION_HEIGHT - 1), fill=ANSWER_COLOURS[correct])
        caption, ink = f"{caption} {answer}", "white"
    draw.text((2, top + CAPTION_HEIGHT / 2), caption, fill=ink, font=font(), anchor="lm")
    return panel


SWATCH = (22, 14)  # trajectory_key: width, height of the black square that shows each mark
Mark = Callable[[ImageDraw.ImageDraw], None]


def trajectory_key(patch_sizes: Sequence[int], width: int, game: bool = False) -> Image.Image:
    """What the marks of :func:`trajectory_panel` mean, in rows no wider than ``width``; for a
    ``game``, the band says caught or missed and there is no ``empty`` mark."""
    w, h = SWATCH

    def box(colour: tuple[int, int, int]) -> Mark:
        return lambda draw: draw.rectangle((4, 2, w - 5, h - 3), outline=colour, width=2)

    def path(draw: ImageDraw.ImageDraw) -> None:
        draw.line((2, h - 3, w / 2, 4, w - 5, h - 5), fill=PATH_COLOUR, width=2)
        draw.ellipse((w - 8, h - 8, w - 2, h - 2), outline=PATH_COLOUR, width=2)

    def blank(draw: ImageDraw.ImageDraw) -> None:
        pass  # the black swatch is the mark: a tile as dark as empty canvas

    def bands(draw: ImageDraw.ImageDraw) -> None:
        draw.rectangle((0, 0, w / 2 - 1, h - 1), fill=ANSWER_COLOURS[True])
        draw.rectangle((w / 2, 0, w - 1, h - 1), fill=ANSWER_COLOURS[False])

    several = len(patch_sizes) > 1
    items: list[tuple[str, Mark]] = [
        (f"glimpse{f' scale {i + 1}' if several else ''} ({side} px): box on canvas, tile below",
         box(SCALE_COLOURS[i % len(SCALE_COLOURS)]))
        for i, side in enumerate(patch_sizes)
    ]  # fmt: skip
    items.append(("path of the glimpses so far", path))
    if game:
        items.append(("at the last step: green caught, red missed", bands))
    else:
        items += [
            ('"empty": the tile shows blank canvas', blank),
            ("answer (label->answer), at the last step: green right, red wrong", bands),
        ]
    line_h, gap = h + 4, 14
    placed: list[tuple[int, int, str, Mark]] = []  # x, row, text, mark
    x, row = TILE_GAP, 0
    for text, mark in items:
        item_w = w + 4 + int(font().getlength(text))
        if x > TILE_GAP and x + item_w > width - TILE_GAP:  # wrap, unless alone on its row
            x, row = TILE_GAP, row + 1
        placed.append((x, row, text, mark))
        x += item_w + gap
    key = Image.new("RGB", (width, (row + 1) * line_h + 2), "white")
    draw = ImageDraw.Draw(key)
    for x, row, text, mark in placed:
        y = 2 + row * line_h
        swatch = Image.new("RGB", SWATCH, "black")  # each mark on black, as on the canvas
        mark(ImageDraw.Draw(swatch))
        key.paste(swatch, (x, y))
        draw.text((x + w + 4, y + h / 2), text, fill="black", font=font(), anchor="lm")
    return key


def with_header(
    picture: Image.Image, title: str = "", key: Image.Image | None = None
) -> Image.Image:
    """``picture`` under a ``title`` line and a ``key`` (each only when given)."""
    parts = []
    if title:
        line = Image.new("RGB", (picture.width, TITLE_HEIGHT), "white")
        ImageDraw.Draw(line).text((TILE_GAP, TITLE_HEIGHT / 2), title, fill="black",
                                  font=font(TITLE_SIZE), anchor="lm")  # fmt: skip
        parts.append(line)
    if key is not None:
        parts.append(key)
    if not parts:
        return picture
    out = Image.new("RGB", (picture.width, sum(p.height for p in parts) + picture.height), "white")
    y = 0
    for part in [*parts, picture]:
        out.paste(part, (0, y))
        y += part.height
    return out


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
    ImageDraw.Draw(panel).text((2, side + 2), caption, fill="black", font=font())
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
