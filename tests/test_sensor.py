"""The sensor against a slow, plainly written reference, and its error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glimpse.errors import ConfigError
from glimpse.sensor import GlimpseSensor


def reference_glimpse(image: np.ndarray, x: float, y: float, g: int, k: int, s: int) -> np.ndarray:
    """One image (C, H, W) in [0, 1], one location: crop each patch, then average its blocks."""
    channels, height, width = image.shape
    x, y = min(max(x, -1.0), 1.0), min(max(y, -1.0), 1.0)
    out = np.zeros((k, channels, g, g))
    for i in range(k):
        side, block = g * s**i, s**i
        x0 = math.floor(((x + 1.0) * width - side + 1.0) / 2.0)
        y0 = math.floor(((y + 1.0) * height - side + 1.0) / 2.0)
        patch = np.zeros((channels, side, side))
        for row in range(side):
            for col in range(side):
                if 0 <= y0 + row < height and 0 <= x0 + col < width:
                    patch[:, row, col] = image[:, y0 + row, x0 + col]
        for u in range(g):
            for v in range(g):
                cell = patch[:, u * block : (u + 1) * block, v * block : (v + 1) * block]
                out[i, :, u, v] = cell.mean(axis=(1, 2))
    return out


def reference_batch(images01: np.ndarray, locations: np.ndarray, g: int, k: int, s: int):
    return np.stack(
        [
            reference_glimpse(img, float(loc[0]), float(loc[1]), g, k, s)
            for img, loc in zip(images01, locations, strict=True)
        ]
    )


special_coordinates = st.sampled_from([-1.0, 1.0, 0.0, -1.5, 2.0, -0.999, 0.5, 1e-7])
coordinates = st.one_of(special_coordinates, st.floats(-1.25, 1.25, width=32))


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(5, 33),
    width=st.integers(5, 33),
    channels=st.sampled_from([1, 3]),
    g=st.integers(1, 6),
    k=st.integers(1, 4),
    s=st.integers(1, 3),
    use_uint8=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
    xs=st.lists(st.tuples(coordinates, coordinates), min_size=1, max_size=4),
)
def test_sensor_equals_reference(height, width, channels, g, k, s, use_uint8, seed, xs):
    rng = np.random.default_rng(seed)
    batch = len(xs)
    locations = np.array(xs, dtype=np.float32)
    if use_uint8:
        images = rng.integers(0, 256, (batch, channels, height, width), dtype=np.uint8)
        images01 = images / 255.0
    else:
        images = rng.random((batch, channels, height, width)).astype(np.float32)
        images01 = images.astype(np.float64)
    sensor = GlimpseSensor(glimpse_size=g, num_scales=k, scale_factor=s)
    got = sensor.extract_numpy(images, locations)
    assert got.shape == (batch, k, channels, g, g)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, reference_batch(images01, locations, g, k, s), atol=1e-6)


def test_one_sensor_serves_images_of_several_sizes_and_types():
    """The per-size and per-dtype constants the sensor caches are kept apart."""
    rng = np.random.default_rng(1)
    sensor = GlimpseSensor(glimpse_size=3, num_scales=2, scale_factor=2)
    locations = np.array([[0.3, -0.7], [-1.0, 0.9]], dtype=np.float32)
    for _ in range(2):  # the second pass reads from the caches the first one filled
        for height, width, use_uint8 in ((28, 28, True), (17, 40, False), (28, 28, False)):
            images = rng.integers(0, 256, (2, 1, height, width), dtype=np.uint8)
            images01 = images / 255.0
            if not use_uint8:
                images = images01.astype(np.float32)
            got = sensor.extract_numpy(images, locations)
            expected = reference_batch(images01, locations, 3, 2, 2)
            np.testing.assert_allclose(got, expected, atol=1e-6)


def test_centre_patch_on_even_image_is_exactly_centred():
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 3:5, 3:5] = 1.0  # the four centre pixels
    glimpse = GlimpseSensor(glimpse_size=2).extract(image, torch.zeros(1, 2))
    assert torch.equal(glimpse[0, 0, 0], torch.ones(2, 2))


def test_corners_follow_the_convention():
    """(-1, -1) is the top-left corner: a 2x2 patch there sees one image pixel, bottom-right."""
    image = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    sensor = GlimpseSensor(glimpse_size=2)
    top_left = sensor.extract(image, torch.tensor([[-1.0, -1.0]]))[0, 0, 0]
    bottom_right = sensor.extract(image, torch.tensor([[1.0, 1.0]]))[0, 0, 0]
    assert torch.equal(top_left, torch.tensor([[0.0, 0.0], [0.0, 1.0]]))
    assert torch.equal(bottom_right, torch.tensor([[16.0, 0.0], [0.0, 0.0]]))


def test_integral_table_is_reused_across_glimpses():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (5, 1, 60, 60), dtype=np.uint8))
    sensor = GlimpseSensor(glimpse_size=12, num_scales=3, scale_factor=2)
    table = sensor.integral(images)
    for _ in range(3):
        locations = torch.from_numpy(rng.uniform(-1, 1, (5, 2)).astype(np.float32))
        assert torch.equal(sensor.read(table, locations), sensor.extract(images, locations))


def test_large_uint8_images_stay_exact():
    """Above 256 x 256 a float32 table would round; the sensor switches to float64."""
    image = torch.full((1, 1, 400, 400), 255, dtype=torch.uint8)
    image[0, 0, 399, 399] = 0
    sensor = GlimpseSensor(glimpse_size=1)
    assert sensor.integral(image).table.dtype == torch.float64
    corner = sensor.extract(image, torch.tensor([[1.0, 1.0]]))
    assert corner.item() == 0.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"glimpse_size": 0}, "glimpse_size=0"),
        ({"num_scales": 0}, "num_scales=0"),
        ({"scale_factor": 1.5}, "scale_factor=1.5"),
        ({"glimpse_size": True}, "glimpse_size=True"),
        ({"scale_factor": -2}, "scale_factor=-2"),
    ],
)
def test_invalid_configuration_names_the_value(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        GlimpseSensor(**kwargs)


def test_bad_inputs_get_clear_errors():
    sensor = GlimpseSensor()
    with pytest.raises(ConfigError, match=r"\(B, C, H, W\)"):
        sensor.extract(torch.zeros(28, 28), torch.zeros(1, 2))
    with pytest.raises(ConfigError, match="NaN"):
        sensor.extract(torch.zeros(1, 1, 28, 28), torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ConfigError, match="one \\(x, y\\) per image"):
        sensor.extract(torch.zeros(2, 1, 28, 28), torch.zeros(3, 2))
    with pytest.raises(ConfigError, match="uint8"):
        sensor.extract(torch.zeros(1, 1, 28, 28, dtype=torch.int64), torch.zeros(1, 2))


@pytest.mark.parametrize(
    "batch, k, dtype", [(1, 4, torch.uint8), (2, 3, torch.float32), (8, 1, torch.uint8)]
)
def test_the_few_patch_read_is_bitwise_the_batched_read(monkeypatch, batch, k, dtype):
    """A batch of few patches is read through strided views of an edge-padded table
    (``_read_sliced``); it must give exactly the batched index read's numbers."""
    import glimpse.sensor as sensor_module

    rng = np.random.default_rng(batch)
    images = torch.from_numpy(rng.integers(0, 256, (batch, 2, 37, 50), dtype=np.uint8)).to(dtype)
    sensor = GlimpseSensor(glimpse_size=5, num_scales=k, scale_factor=3)
    table = sensor.integral(images)
    for _ in range(20):  # inside, across the borders and beyond them
        locations = torch.from_numpy(rng.uniform(-1.3, 1.3, (batch, 2)).astype(np.float32))
        sliced = sensor.read(table, locations)
        monkeypatch.setattr(sensor_module, "SLICED_READ_PATCHES", 0)
        batched = sensor.read(table, locations)
        monkeypatch.undo()
        assert torch.equal(sliced, batched)


@pytest.mark.parametrize("reads", [1, 10**6])  # few reads: the pixels; many: the table
@pytest.mark.parametrize(
    "size, k, dtype",
    [((37, 50), 3, torch.uint8), ((300, 260), 4, torch.uint8), ((37, 50), 2, torch.float32)],
)
def test_framed_images_give_the_tables_glimpses_from_either_source(
    monkeypatch, size, k, dtype, reads
):
    """``read_framed`` reads the edge-padded table or sums each patch's blocks from the
    pixels: for uint8 images bitwise the batched table read's numbers (also above 256 x 256,
    where the table is float64), for floating images equal to float64 rounding."""
    import glimpse.sensor as sensor_module

    rng = np.random.default_rng(k)
    images = torch.from_numpy(rng.integers(0, 256, (2, 2, *size), dtype=np.uint8)).to(dtype)
    if dtype.is_floating_point:
        images /= 255.0
    sensor = GlimpseSensor(glimpse_size=5, num_scales=k, scale_factor=3)
    table, framed = sensor.integral(images), sensor.frame(images, reads)
    assert framed.from_pixels == (reads == 1)
    for _ in range(20):  # inside, across the borders and beyond them
        locations = torch.from_numpy(rng.uniform(-1.3, 1.3, (2, 2)).astype(np.float32))
        got = sensor.read_framed(framed, locations)
        monkeypatch.setattr(sensor_module, "SLICED_READ_PATCHES", 0)  # the index read
        batched = sensor.read(table, locations)
        monkeypatch.undo()
        if dtype == torch.uint8:
            assert torch.equal(got, batched)
        else:
            torch.testing.assert_close(got, batched, rtol=1e-6, atol=1e-7)
    with pytest.raises(ConfigError, match="one \\(x, y\\) per image"):
        sensor.read_framed(framed, torch.zeros(3, 2))
    with pytest.raises(ConfigError, match="another sensor"):  # same margin, other patches
        GlimpseSensor(glimpse_size=3, num_scales=k, scale_factor=5).read_framed(framed, locations)
    with pytest.raises(ConfigError, match="reads=0"):
        sensor.frame(images, 0)


def test_large_canvases_are_read_from_their_pixels_small_ones_from_their_table():
    """RAM's 8 glimpses of 12 x 12 at 4 scales: building the table is less work up to
    140 x 140 pixels, summing the patches' pixels beyond."""
    sensor = GlimpseSensor(glimpse_size=12, num_scales=4, scale_factor=2)
    for side, from_pixels in ((100, False), (140, False), (141, True), (400, True)):
        images = torch.zeros(1, 1, side, side, dtype=torch.uint8)
        assert sensor.frame(images, reads=8).from_pixels == from_pixels, side


def test_episodes_read_the_new_canvas_after_a_partial_reset():
    """The few-patch read keeps a padded copy of the table: a reset must not read a stale one."""
    from glimpse.envs.glimpse_env import make_episodes

    settings = {"task": "cluttered", "size": 60, "glimpse_size": 12, "num_scales": 3}
    episodes = make_episodes(2, "train", False, settings)
    episodes.seed(np.arange(2, dtype=np.uint64))
    for slots in ([True, True], [True, False], [False, True]):
        episodes.reset(np.array(slots))
        expected = episodes.sensor.extract_numpy(episodes.canvases, episodes.locations)
        np.testing.assert_array_equal(episodes.observations()["glimpse"], expected)
