"""Pictures of trajectories (title, key, answer only at the end, empty glimpses) and learning
curves, drawn from small synthetic inputs: no training, no dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from glimpse.agents.visualise import (
    CURVES_SIZE,
    LAST_FRAME_MS,
    draw_trajectories,
    panels_at,
    plot_curves,
    run_title,
)
from glimpse.drawing import (
    ANSWER_COLOURS,
    TITLE_HEIGHT,
    empty_patches,
    glimpse_strip,
)
from glimpse.envs.evaluation import Trajectories
from glimpse.errors import GlimpseError
from glimpse.sensor import GlimpseSensor

SIDE = 28


def blob_canvas() -> np.ndarray:
    """A black 28 x 28 canvas with a white square in the middle, rows and columns 10 to 17."""
    canvas = np.zeros((1, SIDE, SIDE), np.uint8)
    canvas[:, 10:18, 10:18] = 255
    return canvas


def glimpses_at(sensor: GlimpseSensor, locations: list[tuple[float, float]]) -> np.ndarray:
    """The glimpses ``(n, k, C, g, g)`` of the blob canvas at each of ``locations``."""
    import torch

    canvases = torch.from_numpy(np.repeat(blob_canvas()[None], len(locations), axis=0))
    return sensor.read(sensor.integral(canvases), torch.tensor(locations)).numpy()


def trajectories(predictions: list[int]) -> Trajectories:
    """Two episodes on the blob canvas: the first takes all 3 steps, the second stops after 2
    (as PPO may); labels 1 and 2."""
    sensor = GlimpseSensor(8, 1, 2)
    steps = [(-0.9, -0.9), (0.0, 0.0), (0.1, 0.1)]
    locations = np.array([steps, steps], np.float32)
    locations[1, 2] = np.nan
    glimpses = np.stack([glimpses_at(sensor, steps)] * 2)  # (2, 3, 1, 1, 8, 8)
    glimpses[1, 2] = 0
    return Trajectories(
        canvases=np.stack([blob_canvas()] * 2),
        labels=np.array([1, 2]),
        predictions=np.array(predictions),
        scores=np.zeros((2, 3), np.float32),
        locations=locations,
        glimpses=glimpses,
        sensor=np.array([8, 1, 2]),
        class_names=np.array(["zero", "one", "two"]),
        successes=np.array(predictions) == np.array([1, 2]),
    )


def answer_pixels(panel: Image.Image) -> int:
    """How many pixels of ``panel`` have a colour of the answer's band."""
    pixels = np.asarray(panel)
    return sum(int(np.all(pixels == colour, axis=-1).sum()) for colour in ANSWER_COLOURS.values())


def test_the_answer_shows_only_from_the_step_that_gives_it(tmp_path):
    right, wrong = trajectories([1, 2]), trajectories([0, 0])
    for episode, last in ((0, 2), (1, 1)):
        for step in range(3):
            ok, ko = panels_at(right, step)[episode], panels_at(wrong, step)[episode]
            if step < last:  # nothing tells the answer yet, right or wrong
                assert ok == ko and answer_pixels(ok) == 0, (episode, step)
            else:
                assert ok != ko and answer_pixels(ok) > 0 and answer_pixels(ko) > 0
    gifs = []
    for name, drawn in (("right", right), ("wrong", wrong)):
        draw_trajectories(drawn, tmp_path / f"{name}.gif")
        gifs.append(Image.open(tmp_path / f"{name}.gif"))
    for frame, answered in enumerate((False, True, True)):
        for gif in gifs:
            gif.seek(frame)
        first, second = (np.asarray(gif.convert("RGB")) for gif in gifs)
        assert np.array_equal(first, second) != answered, frame
    assert gifs[0].info["duration"] == LAST_FRAME_MS  # the answer's frame is held longer
    for gif in gifs:
        gif.close()


def test_the_title_heads_the_picture(tmp_path):
    title = run_title("tiny-seed1", "MNIST-v0", 1.234)
    assert title == "tiny-seed1 | MNIST-v0 | test error 1.23%"
    assert run_title("tiny-seed1", "MNIST-v0", None).endswith("| no test error recorded")
    drawn = trajectories([1, 2])
    draw_trajectories(drawn, tmp_path / "plain.png")
    draw_trajectories(drawn, tmp_path / "titled.png", title=title)
    plain = np.asarray(Image.open(tmp_path / "plain.png").convert("RGB"))
    titled = np.asarray(Image.open(tmp_path / "titled.png").convert("RGB"))
    assert titled.shape == (plain.shape[0] + TITLE_HEIGHT, *plain.shape[1:])
    band = titled[:TITLE_HEIGHT]
    assert (band.min(axis=-1) < 100).sum() > 50  # dark text on the white band
    assert np.array_equal(titled[TITLE_HEIGHT:], plain)  # the key and panels as without


def test_a_glimpse_on_blank_canvas_is_marked_empty():
    one_scale = GlimpseSensor(8, 1, 2)
    off, on = glimpses_at(one_scale, [(-0.9, -0.9), (0.0, 0.0)])
    assert off.max() == 0 and on.max() == 1  # beside the blob, and on it
    assert empty_patches(off).tolist() == [True] and empty_patches(on).tolist() == [False]
    tile = np.asarray(glimpse_strip(off, 180))[4:-4, 4:-4]  # inside the coloured outline
    assert (tile.min(axis=-1) > 100).sum() > 10  # the glimpse is black: light pixels are the mark
    # Near the blob: the two small patches see blank canvas, the largest a corner of the blob.
    near = glimpses_at(GlimpseSensor(4, 3, 2), [(-0.6, -0.6)])[0]
    assert empty_patches(near).tolist() == [True, True, False]
    # In the drawn panel: the first step of the trajectories above lies beside the blob.
    panel = np.asarray(panels_at(trajectories([1, 2]), 0)[0])
    strip = panel[180 + 4 + 4 : 180 + 4 + 180 - 4, 4:-4]
    assert (strip.min(axis=-1) > 100).sum() > 10


def test_a_game_is_drawn_without_empty_marks_and_says_caught_or_missed(tmp_path):
    played = trajectories([1, 2])
    played.labels[:] = -1  # a game: no class
    played.successes[:] = [True, False]
    panels = panels_at(played, 2)
    strip = np.asarray(panels_at(played, 0)[0])[180 + 4 + 4 : 180 + 4 + 180 - 4, 4:-4]
    assert (strip.min(axis=-1) > 100).sum() == 0  # blank screen, and no "empty" over the ball
    assert answer_pixels(panels[0]) > 0 and answer_pixels(panels[1]) > 0
    draw_trajectories(played, tmp_path / "game.png")
    draw_trajectories(trajectories([1, 2]), tmp_path / "digits.png")
    game_key, digits_key = (
        np.asarray(Image.open(tmp_path / name).convert("RGB"))[:40]
        for name in ("game.png", "digits.png")
    )
    assert not np.array_equal(game_key, digits_key)  # the key says caught/missed, not answers


def write_run(folder, lines: list[dict], test_error: float | None = None):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if test_error is not None:
        (folder / "test.json").write_text(json.dumps({"test_error": test_error}))
    return folder


def test_plot_curves_draws_every_run_in_one_png(tmp_path):
    runs = [
        write_run(tmp_path / "a", [{"epoch": e, "val_error": 40 / e} for e in range(1, 30)], 1.5),
        write_run(tmp_path / "b", [{"epoch": e, "val_error": 30 / e} for e in range(1, 20)]),
    ]
    out = tmp_path / "plots" / "curves.png"
    plot_curves(runs, out)
    with Image.open(out) as picture:
        assert picture.size == CURVES_SIZE
    plot_curves(runs, out, size=(640, 400))
    with Image.open(out) as picture:
        assert picture.size == (640, 400)
        assert len(picture.convert("RGB").getcolors(2**16)) > 10  # curves, not a blank page


def test_plot_curves_refuses_runs_it_cannot_draw(tmp_path):
    good = write_run(tmp_path / "good", [{"epoch": 1, "val_error": 9.0}])
    with pytest.raises(GlimpseError, match=r"no metrics\.jsonl"):
        plot_curves([good, tmp_path], tmp_path / "c.png")
    with pytest.raises(GlimpseError, match="no validation yet"):
        plot_curves([good, write_run(tmp_path / "new", [])], tmp_path / "c.png")
    ppo = write_run(tmp_path / "ppo", [{"steps": 10_000, "val_error": 50.0}])
    with pytest.raises(GlimpseError, match="count progress differently"):
        plot_curves([good, ppo], tmp_path / "c.png")
    with pytest.raises(GlimpseError, match=r"\.png"):
        plot_curves([good], tmp_path / "c.gif")
    assert not (tmp_path / "c.png").exists()
