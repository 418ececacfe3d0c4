"""Image tasks: a labelled image source laid out on canvases, with fixed evaluation splits.

A task is a *source* of labelled images (MNIST, Fashion-MNIST or a folder of the user's images)
and a *layout* that turns source images into the canvases an agent looks at:

=================  ===========================================================================
task name          canvases
=================  ===========================================================================
``mnist``          the 28 x 28 digits as they are
``fashion-mnist``  the 28 x 28 Fashion-MNIST images as they are
``translated``     the digit at a uniformly random position on a blank ``size x size`` canvas
``cluttered``      translated, plus ``distractors`` crops of ``distractor_size`` pixels cut at
                   random from other random images of the same split, placed at random
                   positions; intensities are added and clipped to 255 (Mnih et al. 2014)
``folder``         the user's images (one subfolder per class), padded or resized to ``size``
``catch``          not images but a game whose screen changes at every step
                   (:mod:`glimpse.catch`; the "classes" are the paddle's moves)
=================  ===========================================================================

``translated`` and ``cluttered`` take their images from ``dataset`` (MNIST unless told otherwise).

Splits: ``train`` and ``val`` come from the source's training images (``val_size`` of them,
chosen by ``split_seed``, form ``val``); ``test`` is the source's test set. Validation and test
canvases are generated once from ``canvas_seed`` (:meth:`Task.fixed_canvases`), so every run
evaluates on the same images; training canvases are drawn afresh for every episode from the
caller's generator (:meth:`Task.canvases`). Canvases are ``uint8`` arrays ``(N, C, S, S)``.

Each canvas also has its *target box*: the rows and columns of the target image's ink (its
nonzero pixels) where the layout put it, ``(top, left, bottom, right)`` with the bottom and right
exclusive (:meth:`Task.target_boxes_from_uniforms`, :meth:`Task.fixed_target_boxes`). It is
what "looking at the digit" means when the environments and ``glimpse eval`` count it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from glimpse.catch import Catch
from glimpse.config import check_at_least, check_fields, option
from glimpse.data import DATASETS, LabelledImages, load_idx_dataset
from glimpse.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
TASK_NAMES = ("mnist", "fashion-mnist", "translated", "cluttered", "folder", "catch")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_TASKS_OF_SETTING = {
    "size": ("translated", "cluttered", "folder", "catch"),
    "distractors": ("cluttered",),
    "distractor_size": ("cluttered",),
    "dataset": ("translated", "cluttered"),
    "root": ("folder",),
    "fit": ("folder",),
    "channels": ("folder",),
    "test_fraction": ("folder",),
}  # the tasks that read each setting; the others refuse it rather than ignore it
_DISTRACTORS_PAPER = {60: 4, 100: 8}  # Mnih et al. 2014; other sizes keep the 100 px density


@dataclass(frozen=True)
class TaskConfig:
    """Which images an agent sees and how they are laid out."""

    task: str = option("mnist", "Task (see glimpse.tasks).", choices=TASK_NAMES)
    size: int | None = option(
        None,
        "Canvas side in pixels; default 28 (mnist), 60 (translated, cluttered), 64 (folder), "
        "24 (catch).",
    )
    distractors: int | None = option(
        None,
        "cluttered: number of distractors; default 4 at 60 px, 8 at 100 px, else the 100 px "
        "density (8 per 10,000 pixels).",
    )
    distractor_size: int = option(8, "cluttered: side of each distractor crop in pixels.")
    dataset: str = option("mnist", "translated/cluttered: source images.", choices=tuple(DATASETS))
    root: str | None = option(None, "folder: root with one subfolder of images per class.")
    fit: str = option(
        "pad",
        "folder: pad (shrink to fit keeping the aspect, pad with black) or resize (stretch).",
        choices=("pad", "resize"),
    )
    channels: int | None = option(
        None, "folder: 1 (grey) or 3 (RGB); default 3 if any image is in colour, else 1."
    )
    val_size: int = option(5000, "Training images held out as the validation split.")
    test_fraction: float = option(
        0.2, "folder without train/ and test/ subfolders: share of images used for test."
    )
    split_seed: int = option(0, "Seed choosing which images form the validation split.")
    canvas_seed: int = option(0, "Seed of the fixed validation and test canvases.")
    data_dir: str | None = option(
        None, "Dataset folder; default $GLIMPSE_DATA, else ~/.cache/glimpse."
    )

    def __post_init__(self) -> None:
        check_fields(self)
        check_at_least(self, 1, "size", "distractor_size")
        check_at_least(self, 0, "distractors", "val_size")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels={self.channels}; choose 1 (grey) or 3 (RGB).")
        if not 0 <= self.test_fraction < 1:
            raise ConfigError(
                f"test_fraction={self.test_fraction} must be at least 0 and below 1 (0.2: a "
                "fifth of each class's images for test)."
            )
        for name, tasks in _TASKS_OF_SETTING.items():
            default = type(self).__dataclass_fields__[name].default
            if self.task not in tasks and getattr(self, name) != default:
                raise ConfigError(
                    f"{name}={getattr(self, name)!r} does nothing for the {self.task} task (only "
                    f"for {', '.join(tasks)}): leave it out."
                )

    @property
    def canvas_size(self) -> int:
        if self.size is not None:
            return self.size
        return {"translated": 60, "cluttered": 60, "folder": 64, "catch": 24}.get(self.task, 28)

    @property
    def num_distractors(self) -> int:
        if self.distractors is not None:
            return self.distractors
        size = self.canvas_size
        return _DISTRACTORS_PAPER.get(size, round(8 * (size / 100) ** 2))


# ---------------------------------------------------------------------------------------------
# Composition (vectorised over canvases)
# ---------------------------------------------------------------------------------------------


def _flat_offsets(channels: int, height: int, width: int, plane: tuple[int, int]) -> np.ndarray:
    """Flat offsets of a ``(channels, height, width)`` block at the top left of ``plane``-sized
    channel planes (a canvas or a source image), relative to the block's first pixel."""
    rows, cols = plane
    return (
        np.arange(channels)[:, None, None] * rows * cols
        + np.arange(height)[None, :, None] * cols
        + np.arange(width)[None, None, :]
    ).ravel()


def _scaled(uniforms: np.ndarray, n: int) -> np.ndarray:
    """Integers uniform in ``0 .. n-1`` from uniforms in ``[0, 1)``."""
    return np.floor(uniforms * n).astype(np.int64)


def image_positions(
    uniforms: np.ndarray, distractors: int, size: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top row and left column of the target image on each canvas, from :func:`compose`'s
    ``uniforms``: the last two draws of a canvas, after the ``5 * distractors`` of the clutter."""
    c = 5 * distractors
    return _scaled(uniforms[:, c], size - height + 1), _scaled(uniforms[:, c + 1], size - width + 1)


def ink_boxes(images: np.ndarray) -> np.ndarray:
    """``(N, 4)`` int64: ``top, left, bottom, right`` (bottom and right exclusive) of the nonzero
    pixels of each image ``(N, C, H, W)``; the whole image where every pixel is zero."""
    rows, cols = images.any(axis=(1, 3)), images.any(axis=(1, 2))  # (N, H), (N, W)
    height, width = rows.shape[1], cols.shape[1]
    boxes = np.stack([
        rows.argmax(axis=1), cols.argmax(axis=1),
        height - rows[:, ::-1].argmax(axis=1), width - cols[:, ::-1].argmax(axis=1),
    ], axis=1).astype(np.int64)  # fmt: skip
    boxes[~rows.any(axis=1)] = (0, 0, height, width)
    return boxes


def draws_per_canvas(distractors: int) -> int:
    """How many uniforms :func:`compose` reads per canvas: 5 per distractor, 2 for the image."""
    return 5 * distractors + 2


def compose(
    images: LabelledImages,
    indices: np.ndarray,
    size: int,
    distractors: int,
    distractor_size: int,
    uniforms: np.ndarray,
) -> np.ndarray:
    """Canvases with ``images[indices]`` at random positions plus ``distractors`` random crops.

    ``uniforms`` ``(n, draws_per_canvas(distractors))`` in ``[0, 1)`` decide everything random,
    so a caller with one random stream per canvas gets the same canvas whatever the batch.
    Per distractor: which other image (never the canvas's own), the crop's top and left, the
    crop's position; then the image's position. Overlapping pixels add up to at most 255.
    Vectorised over canvases: each paste is one gather, a saturating add and one scatter on flat
    indices (one patch per canvas, so no index repeats). Saturating at every paste gives what
    one clip after all of them would, as every layer is non-negative, and touches only the
    pasted pixels (composing 128 canvases of 200 px took a quarter to 40% less time than with
    a clip of the whole batch at the end; see the experiment log's Speed section).
    """
    n = len(indices)
    source = images.images
    channels, h, w = source.shape[1:]
    d = distractor_size
    if size < max(h, w) or (distractors and d > min(h, w)):
        raise ConfigError(
            f"A {size} px canvas cannot hold the {h}x{w} images (or {d} px distractors cut from "
            f"them); choose a larger --size or a smaller --distractor-size."
        )
    plane = size * size
    canvas = np.zeros(n * channels * plane, dtype=np.uint8)

    def paste(flat: np.ndarray, layer: np.ndarray) -> None:
        canvas[flat] = np.minimum(canvas[flat] + layer.astype(np.uint16), 255)

    canvas_starts = np.arange(n) * channels * plane
    source_flat = source.reshape(-1)
    source_starts = np.arange(len(source)) * channels * h * w
    crop_offsets = _flat_offsets(channels, d, d, (h, w))
    crop_paste_offsets = _flat_offsets(channels, d, d, (size, size))
    draws = uniforms[:, : 5 * distractors].reshape(n, distractors, 5)  # (n, D, 5)
    others = (indices[:, None] + 1 + _scaled(draws[..., 0], max(len(source) - 1, 1))) % len(source)
    crop_starts = source_starts[others] + _scaled(draws[..., 1], h - d + 1) * w
    crop_starts += _scaled(draws[..., 2], w - d + 1)
    crops = source_flat[crop_starts[..., None] + crop_offsets]  # (n, D, crop pixels)
    paste_starts = canvas_starts[:, None] + _scaled(draws[..., 3], size - d + 1) * size
    paste_starts += _scaled(draws[..., 4], size - d + 1)
    paste_index = paste_starts[..., None] + crop_paste_offsets
    for j in range(distractors):
        paste(paste_index[:, j], crops[:, j])
    tops, lefts = image_positions(uniforms, distractors, size, h, w)
    starts = canvas_starts + tops * size + lefts
    image_offsets = _flat_offsets(channels, h, w, (size, size))
    paste(starts[:, None] + image_offsets, source[indices].reshape(n, -1))
    return canvas.reshape(n, channels, size, size)


# ---------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _class_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DataError(
            f"{root} has no class subfolders. Arrange the images as {root}/<class name>/<image>"
            f".png (or .jpg), one subfolder per class."
        )
    for folder in folders:
        if not _image_files(folder):
            raise DataError(
                f"Class folder {folder} holds no PNG or JPEG images. Add images to it or remove it."
            )
    return folders


def _fit_image(path: Path, size: int, fit: str, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = opened.convert(mode)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise DataError(
            f"Cannot read image {path}: {error}. Remove or replace the file (PNG or JPEG)."
        ) from error
    if fit == "resize":
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    else:
        if max(image.size) > size:
            scale = size / max(image.size)
            new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(new_size, Image.Resampling.BILINEAR)
        padded = Image.new(mode, (size, size))
        padded.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
        image = padded
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _is_colour(path: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.mode not in ("1", "L", "LA", "I", "I;16", "F")
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(
            f"Cannot read image {path}: {error}. Remove or replace the file (PNG or JPEG)."
        ) from error


def _load_folder_split(
    folder: Path, class_names: list[str], size: int, fit: str, mode: str
) -> LabelledImages:
    images, labels = [], []
    for label, name in enumerate(class_names):
        class_folder = folder / name
        if not class_folder.is_dir():
            continue
        for path in _image_files(class_folder):
            images.append(_fit_image(path, size, fit, mode))
            labels.append(label)
    return LabelledImages(np.stack(images), np.array(labels, dtype=np.int64))


def load_folder(config: TaskConfig) -> tuple[LabelledImages, LabelledImages, list[str]]:
    """Train and test images of a class-per-subfolder image folder, and the class names.

    With ``root/train/`` and ``root/test/`` the split is the user's; otherwise ``test_fraction``
    of the images (chosen by ``split_seed``) form the test split.
    """
    if config.root is None:
        raise ConfigError("The folder task needs its root folder: pass --root PATH (root=...).")
    root = Path(config.root).expanduser()
    if not root.is_dir():
        raise DataError(f"Image folder {root} does not exist. Pass an existing folder as --root.")
    presplit = (root / "train").is_dir() and (root / "test").is_dir()
    train_root = root / "train" if presplit else root
    class_folders = _class_folders(train_root)
    class_names = [p.name for p in class_folders]
    all_folders = [*class_folders, *(_class_folders(root / "test") if presplit else [])]
    colour = any(_is_colour(p) for f in all_folders for p in _image_files(f))
    channels = config.channels or (3 if colour else 1)
    mode = "RGB" if channels == 3 else "L"
    size = config.canvas_size
    train = _load_folder_split(train_root, class_names, size, config.fit, mode)
    if presplit:
        test = _load_folder_split(root / "test", class_names, size, config.fit, mode)
        return train, test, class_names
    order = np.random.default_rng(config.split_seed).permutation(len(train))
    n_test = round(len(train) * config.test_fraction)
    return (
        train.subset(np.sort(order[n_test:])),
        train.subset(np.sort(order[:n_test])),
        class_names,
    )


# ---------------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------------


class Task:
    """Canvases of one task for the three splits; see the module docstring.

    Build it with :func:`make_task`, which shares one instance per configuration in a process.
    """

    def __init__(self, config: TaskConfig) -> None:
        self.config = config  # its task and dataset are among the choices (check_fields)
        if config.task == "folder":
            train, test, class_names = load_folder(config)
        else:
            source = "fashion-mnist" if config.task == "fashion-mnist" else config.dataset
            train, test = load_idx_dataset(DATASETS[source], config.data_dir)
            class_names = list(DATASETS[source].class_names)
        if not 0 <= config.val_size < len(train):
            raise ConfigError(
                f"val_size={config.val_size} must be between 0 and the {len(train)} training "
                f"images minus one; pass a smaller --val-size."
            )
        order = np.random.default_rng(config.split_seed).permutation(len(train))
        self.images = {
            "train": train.subset(np.sort(order[config.val_size :])),
            "val": train.subset(np.sort(order[: config.val_size])),
            "test": test,
        }
        self.class_names = class_names
        self.layered = config.task in ("translated", "cluttered")
        self.canvas_size = config.canvas_size if self.layered else train.images.shape[-1]
        self.channels = train.images.shape[1]
        self._fixed: dict[str, LabelledImages] = {}
        self._fixed_boxes: dict[str, np.ndarray] = {}
        self._ink: dict[str, np.ndarray] = {}

    def __reduce__(self) -> tuple[object, ...]:
        # Pickles (of environments, for instance) carry the config, not the images.
        return (make_task, (self.config,))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def canvas_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.canvas_size, self.canvas_size)

    def split_size(self, split: str) -> int:
        return len(self._split(split))

    def _split(self, split: str) -> LabelledImages:
        if split not in SPLITS:
            raise ConfigError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
        return self.images[split]

    @property
    def draws_per_canvas(self) -> int:
        """Uniforms :meth:`canvases_from_uniforms` needs per canvas (0 for as-is layouts)."""
        return draws_per_canvas(self.num_distractors) if self.layered else 0

    @property
    def num_distractors(self) -> int:
        return self.config.num_distractors if self.config.task == "cluttered" else 0

    def canvases_from_uniforms(
        self, split: str, indices: np.ndarray, uniforms: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Canvases ``(n, C, S, S)`` uint8 of the split's images ``indices``, and their labels.

        ``uniforms`` ``(n, draws_per_canvas)`` in ``[0, 1)`` place the image and distractors.
        """
        images = self._split(split)
        indices = np.asarray(indices, dtype=np.int64)
        labels = images.labels[indices]
        if not self.layered:
            return images.images[indices], labels
        canvases = compose(
            images,
            indices,
            self.canvas_size,
            self.num_distractors,
            self.config.distractor_size,
            uniforms,
        )
        return canvases, labels

    def target_boxes_from_uniforms(
        self, split: str, indices: np.ndarray, uniforms: np.ndarray
    ) -> np.ndarray:
        """The target boxes ``(n, 4)`` (see the module docstring) of the canvases that
        :meth:`canvases_from_uniforms` makes from the same arguments."""
        if split not in self._ink:
            self._ink[split] = ink_boxes(self._split(split).images)
        boxes = self._ink[split][np.asarray(indices, dtype=np.int64)]
        if self.layered:
            height, width = self._split(split).images.shape[2:]
            tops, lefts = image_positions(
                uniforms, self.num_distractors, self.canvas_size, height, width
            )
            boxes = boxes + np.stack([tops, lefts, tops, lefts], axis=1)
        return boxes

    def canvases(
        self, split: str, indices: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fresh canvases of the split's images ``indices`` placed by ``rng``, and labels."""
        uniforms = rng.random((len(indices), self.draws_per_canvas))
        return self.canvases_from_uniforms(split, indices, uniforms)

    def fixed_canvases(self, split: str) -> LabelledImages:
        """Every canvas of ``split`` drawn from ``canvas_seed``: the same in every run (cached)."""
        if split not in self._fixed:
            rng = np.random.default_rng([self.config.canvas_seed, SPLITS.index(split)])
            indices = np.arange(self.split_size(split))
            uniforms = rng.random((len(indices), self.draws_per_canvas))  # as canvases() draws
            canvases, labels = self.canvases_from_uniforms(split, indices, uniforms)
            canvases.setflags(write=False)
            self._fixed[split] = LabelledImages(canvases, labels)
            self._fixed_boxes[split] = self.target_boxes_from_uniforms(split, indices, uniforms)
        return self._fixed[split]

    def fixed_target_boxes(self, split: str) -> np.ndarray:
        """The target boxes ``(N, 4)`` of :meth:`fixed_canvases` ``(split)``, in its order."""
        self.fixed_canvases(split)
        return self._fixed_boxes[split]


@lru_cache(maxsize=8)
def make_task(config: TaskConfig) -> Task | Catch:
    """The task for ``config``, shared by every environment that asks for it in this process:
    a :class:`Task` of images, or the :class:`glimpse.catch.Catch` game."""
    if config.task == "catch":
        return Catch(config)
    return Task(config)
