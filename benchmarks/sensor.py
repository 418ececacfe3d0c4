"""Glimpses per second of the sensor against a naive crop-then-average-pool sensor.

Each measurement is one 8-glimpse episode on a batch: the per-image setup (the summed-area
table) plus eight reads at random locations, so the setup is amortised over the episode as it is
in the environments. The naive sensor crops every patch of every image with a Python loop over
samples (as the most used PyTorch RAM port does) and average-pools it; it runs in the same
process on the same data.

    python benchmarks/sensor.py            # prints a Markdown table
    python benchmarks/sensor.py --threads 1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from glimpse.sensor import GlimpseSensor

GLIMPSES_PER_EPISODE = 8
CONFIGS = [  # (canvas side, g, k, s)
    (28, 8, 1, 2),
    (60, 12, 3, 2),
    (100, 12, 4, 2),
]


def naive_episode(sensor: GlimpseSensor, images: torch.Tensor, locations: torch.Tensor) -> None:
    """Crop each patch per sample from a zero-padded copy, then average-pool it to g x g."""
    images = images.float() / 255.0
    height, width = images.shape[-2:]
    pad = sensor.patch_sizes[-1]
    padded = F.pad(images, (pad, pad, pad, pad))
    for step_locations in locations:
        origins = sensor.patch_origins(step_locations, height, width).tolist()
        scales = []
        for i, (side, block) in enumerate(zip(sensor.patch_sizes, sensor.block_sizes, strict=True)):
            crops = []
            for b in range(images.shape[0]):
                x0, y0 = origins[b][i]
                crops.append(padded[b, :, y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side])
            scales.append(F.avg_pool2d(torch.stack(crops), block))
        torch.stack(scales, dim=1)


def fast_episode(sensor: GlimpseSensor, images: torch.Tensor, locations: torch.Tensor) -> None:
    table = sensor.integral(images)
    for step_locations in locations:
        sensor.read(table, step_locations)


def glimpses_per_second(
    episode: Callable[[GlimpseSensor, torch.Tensor, torch.Tensor], None],
    sensor: GlimpseSensor,
    images: torch.Tensor,
    locations: torch.Tensor,
    min_seconds: float,
) -> float:
    episode(sensor, images, locations)  # warm-up
    runs, start = 0, time.perf_counter()
    while True:
        episode(sensor, images, locations)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return runs * images.shape[0] * GLIMPSES_PER_EPISODE / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), uint8 canvases, 8-glimpse episodes"
    )
    print()
    print("| canvas | g | k | s | batch | glimpse/s (ours) | glimpse/s (naive) | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for side, g, k, s in CONFIGS:
        sensor = GlimpseSensor(glimpse_size=g, num_scales=k, scale_factor=s)
        for batch in args.batches:
            images = torch.randint(0, 256, (batch, 1, side, side), generator=generator)
            images = images.to(torch.uint8)
            locations = torch.rand(GLIMPSES_PER_EPISODE, batch, 2, generator=generator) * 2 - 1
            ours = glimpses_per_second(fast_episode, sensor, images, locations, args.seconds)
            naive = glimpses_per_second(naive_episode, sensor, images, locations, args.seconds)
            print(
                f"| {side}x{side} | {g} | {k} | {s} | {batch:,} | {ours:,.0f} | {naive:,.0f} "
                f"| {ours / naive:.1f}x |"
            )


if __name__ == "__main__":
    main()
