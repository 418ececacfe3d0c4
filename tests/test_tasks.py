"""Canvases of every task, the fixed evaluation splits, and image folders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from glimpse.data import LabelledImages
from glimpse.errors import ConfigError, DataError
from glimpse.tasks import Task, TaskConfig, compose, make_task


def test_splits_partition_the_training_images():
    task = make_task(TaskConfig(task="mnist", val_size=5000, split_seed=3))
    assert task.split_size("train") == 55000 and task.split_size("val") == 5000
    assert task.split_size("test") == 10000
    other = make_task(TaskConfig(task="mnist", val_size=5000, split_seed=4))
    assert not np.array_equal(task.images["val"].labels, other.images["val"].labels)


def test_translated_canvas_holds_the_whole_digit_and_nothing_else():
    task = make_task(TaskConfig(task="translated"))
    rng = np.random.default_rng(0)
    indices = rng.choice(task.split_size("train"), 64, replace=False)
    canvases, labels = task.canvases("train", indices, rng)
    assert canvases.shape == (64, 1, 60, 60) and canvases.dtype == np.uint8
    digits = task.images["train"].images[indices]
    assert np.array_equal(canvases.sum(axis=(1, 2, 3)), digits.sum(axis=(1, 2, 3), dtype=np.int64))
    assert np.array_equal(labels, task.images["train"].labels[indices])


def test_translated_positions_are_uniform_over_the_whole_canvas():
    solid = LabelledImages(np.full((10, 1, 28, 28), 255, np.uint8), np.zeros(10, np.int64))
    uniforms = np.random.default_rng(0).random((4000, 2))
    canvases = compose(solid, np.arange(10).repeat(400), 60, 0, 8, uniforms)
    tops = canvases[:, 0].any(axis=2).argmax(axis=1)
    lefts = canvases[:, 0].any(axis=1).argmax(axis=1)
    for offsets in (tops, lefts):  # every offset 0..32 occurs, about equally often
        counts = np.bincount(offsets, minlength=33)
        assert len(counts) == 33 and counts.min() > 60 and counts.max() < 190


def test_cluttered_adds_distractors_clipped_to_255():
    images = make_task(TaskConfig(task="mnist")).images["test"]
    indices = np.arange(500)
    uniforms = np.random.default_rng(1).random((500, 22))
    clean = compose(images, indices, 60, 0, 8, uniforms[:, 20:])  # same digit positions
    cluttered = compose(images, indices, 60, 4, 8, uniforms)
    assert cluttered.max() == 255
    assert cluttered.astype(int).sum() > clean.astype(int).sum()
    # Each distractor is at most 8x8: extra ink per canvas is bounded by 4 * 64 * 255.
    extra = cluttered.astype(int).sum(axis=(1, 2, 3)) - clean.astype(int).sum(axis=(1, 2, 3))
    assert extra.max() <= 4 * 64 * 255


def test_compose_is_the_clipped_sum_of_its_layers_canvas_by_canvas():
    """The vectorised composition against a plain loop over canvases and layers: every layer
    (the distractors, then the digit) added in integers, the sum clipped to 255 once."""
    images = make_task(TaskConfig(task="mnist")).images["test"]
    n, size, distractors, d = 64, 40, 12, 8  # dense clutter: many overlaps
    indices = np.random.default_rng(2).integers(0, len(images.images), n)
    uniforms = np.random.default_rng(3).random((n, 5 * distractors + 2))
    canvases = compose(images, indices, size, distractors, d, uniforms)
    count = len(images.images)
    for b in range(n):
        expected = np.zeros((size, size), np.int64)
        for j in range(distractors):
            u = uniforms[b, 5 * j : 5 * j + 5]
            other = (indices[b] + 1 + int(u[0] * (count - 1))) % count
            top, left = int(u[1] * (28 - d + 1)), int(u[2] * (28 - d + 1))
            row, col = int(u[3] * (size - d + 1)), int(u[4] * (size - d + 1))
            expected[row : row + d, col : col + d] += images.images[other, 0, top : top + d,
                                                                    left : left + d]  # fmt: skip
        row, col = (int(u * (size - 28 + 1)) for u in uniforms[b, -2:])
        expected[row : row + 28, col : col + 28] += images.images[indices[b], 0]
        np.testing.assert_array_equal(canvases[b, 0], np.minimum(expected, 255))


def test_cluttered_defaults_follow_the_paper():
    assert TaskConfig(task="cluttered").num_distractors == 4
    assert TaskConfig(task="cluttered", size=100).num_distractors == 8
    assert TaskConfig(task="cluttered", size=200).num_distractors == 32


def test_fixed_canvases_are_fixed_and_training_canvases_are_redrawn():
    config = TaskConfig(task="cluttered", size=100)
    first = Task(config).fixed_canvases("test")
    again = Task(config).fixed_canvases("test")
    assert np.array_equal(first.images, again.images)
    assert np.array_equal(first.labels, Task(config).images["test"].labels)
    task = make_task(config)
    rng = np.random.default_rng(0)
    a, _ = task.canvases("train", np.arange(8), rng)
    b, _ = task.canvases("train", np.arange(8), rng)
    assert not np.array_equal(a, b)
    val = task.fixed_canvases("val").images
    assert val.shape == (5000, 1, 100, 100)


def test_fashion_mnist_is_found_when_installed():
    try:
        task = make_task(TaskConfig(task="fashion-mnist"))
    except DataError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    assert task.class_names[9] == "Ankle boot" and task.canvas_shape == (1, 28, 28)


def _write_folder(root, specs):
    """specs: {relative path: (mode, (w, h))}"""
    rng = np.random.default_rng(0)
    for relative, (mode, (w, h)) in specs.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        shape = (h, w, 3) if mode == "RGB" else (h, w)
        Image.fromarray(rng.integers(1, 256, shape, dtype=np.uint8), mode).save(path)


def test_folder_task_loads_grey_and_colour_images(tmp_path):
    _write_folder(
        tmp_path,
        {
            "cat/a.png": ("L", (40, 20)),
            "cat/b.jpg": ("RGB", (16, 16)),
            "dog/c.png": ("L", (10, 30)),
            "dog/d.jpeg": ("L", (64, 64)),
            "dog/e.png": ("L", (8, 8)),
        },
    )
    config = TaskConfig(task="folder", root=str(tmp_path), size=32, val_size=1, test_fraction=0.4)
    task = Task(config)
    assert task.class_names == ["cat", "dog"] and task.channels == 3
    assert task.canvas_shape == (3, 32, 32)
    sizes = [task.split_size(s) for s in ("train", "val", "test")]
    assert sum(sizes) == 5 and sizes[2] == 2
    grey = Task(TaskConfig(task="folder", root=str(tmp_path), size=32, val_size=1, channels=1))
    assert grey.canvas_shape == (1, 32, 32)


def test_folder_pad_keeps_the_aspect_ratio(tmp_path):
    _write_folder(tmp_path, {"wide/a.png": ("L", (64, 32)), "tall/b.png": ("L", (8, 8))})
    task = Task(TaskConfig(task="folder", root=str(tmp_path), size=32, val_size=0, test_fraction=0))
    wide = task.images["train"].images[task.images["train"].labels == 1][0, 0]  # sorted: tall, wide
    ink_rows = np.flatnonzero(wide.any(axis=1))
    assert (ink_rows.min(), ink_rows.max()) == (8, 23)  # 64x32 shrunk to 32x16, centred


def test_folder_with_train_and_test_subfolders_keeps_the_users_split(tmp_path):
    _write_folder(
        tmp_path,
        {"train/a/1.png": ("L", (8, 8)), "train/a/2.png": ("L", (8, 8)),
         "train/b/3.png": ("L", (8, 8)), "test/a/4.png": ("L", (8, 8))},
    )  # fmt: skip
    task = Task(TaskConfig(task="folder", root=str(tmp_path), size=8, val_size=1))
    assert task.split_size("test") == 1 and task.split_size("train") + task.split_size("val") == 3


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "no class subfolders"),
        (lambda root: (root / "empty").mkdir(parents=True), r"empty holds no PNG or JPEG"),
        (
            lambda root: (
                (root / "a").mkdir(parents=True)
                or (root / "a" / "broken.png").write_bytes(b"not a png")
            ),
            r"Cannot read image .*broken\.png",
        ),
    ],
)
def test_bad_folders_get_clear_errors(tmp_path, setup, match):
    root = tmp_path / "images"
    setup(root)
    with pytest.raises(DataError, match=match):
        Task(TaskConfig(task="folder", root=str(root)))


def test_bad_task_settings_get_clear_errors():
    # Unknown tasks, datasets and wrong types are refused by TaskConfig itself: test_config.py
    with pytest.raises(ConfigError, match="val_size"):
        Task(TaskConfig(task="mnist", val_size=60000))
    with pytest.raises(ConfigError, match="cannot hold"):
        make_task(TaskConfig(task="translated", size=20)).canvases(
            "train", np.arange(2), np.random.default_rng(0)
        )


def test_target_box_is_the_digits_ink_where_the_layout_put_it():
    task = make_task(TaskConfig(task="translated"))
    rng = np.random.default_rng(3)
    indices = np.arange(200)
    uniforms = rng.random((200, task.draws_per_canvas))
    canvases, _ = task.canvases_from_uniforms("test", indices, uniforms)
    boxes = task.target_boxes_from_uniforms("test", indices, uniforms)
    # A translated canvas holds the digit and nothing else: its ink box is the target box.
    rows, cols = canvases[:, 0].any(axis=2), canvases[:, 0].any(axis=1)
    for canvas_rows, canvas_cols, (top, left, bottom, right) in zip(rows, cols, boxes, strict=True):
        assert np.flatnonzero(canvas_rows)[[0, -1]].tolist() == [top, bottom - 1]
        assert np.flatnonzero(canvas_cols)[[0, -1]].tolist() == [left, right - 1]


def test_fixed_target_boxes_follow_the_fixed_canvases():
    task = make_task(TaskConfig(task="cluttered", size=100))
    fixed, boxes = task.fixed_canvases("val"), task.fixed_target_boxes("val")
    assert boxes.shape == (5000, 4)
    digits = task.images["val"].images[:50].sum(axis=(1, 2, 3), dtype=np.int64)
    for canvas, (top, left, bottom, right), ink in zip(fixed.images, boxes, digits, strict=False):
        assert canvas[:, top:bottom, left:right].sum(dtype=np.int64) >= ink  # the digit's ink
    mnist = make_task(TaskConfig(task="mnist"))  # as-is layouts: the ink box of the image
    image_box = mnist.fixed_target_boxes("test")[0]
    ink = mnist.fixed_canvases("test").images[0, 0]
    assert np.flatnonzero(ink.any(axis=1))[0] == image_box[0] and image_box[2] <= 28


def test_blank_images_have_the_whole_image_as_their_box():
    from glimpse.tasks import ink_boxes

    images = np.zeros((2, 1, 5, 7), np.uint8)
    images[1, 0, 2, 3] = 9
    assert ink_boxes(images).tolist() == [[0, 0, 5, 7], [2, 3, 3, 4]]
