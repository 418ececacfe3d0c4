"""The batched environment's steps per second at two versions of the code, side by side.

Runs the same measurement (``Glimpse/ClutteredMNIST60-v0``'s native vector env stepped with
random actions, one torch thread) alternately on the working tree and on an earlier commit,
each in a fresh process, and prints every pair's ratio and the median: a change to the episode
is judged against the code before it on the same machine at the same moment, whatever else
the machine is doing.

    python benchmarks/env_versions.py --before HEAD~1 --pairs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEASURE = """
import sys, time, numpy as np, torch
torch.set_num_threads(1)
import gymnasium as gym, glimpse
seconds, sizes = float(sys.argv[1]), [int(n) for n in sys.argv[2:]]
rates = []
for n in sizes:
    vec = gym.make_vec("Glimpse/ClutteredMNIST60-v0", num_envs=n)
    vec.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, vec.single_action_space.nvec, (n, 3)) for _ in range(64)]
    for a in actions[:8]:
        vec.step(a)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        vec.step(actions[steps % 64])
        steps += 1
    rates.append(steps * n / (time.perf_counter() - start))
print(" ".join(f"{rate:.1f}" for rate in rates))
"""


def checkout(revision: str, folder: Path) -> Path:
    """The package of ``revision`` laid out as it installs (``glimpse`` with ``envs`` and
    ``agents`` inside) under ``folder``; returns the folder to put on ``PYTHONPATH``."""
    archive = folder / "tree.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(ROOT), "archive", revision], stdout=out, check=True)
    tree = folder / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    package = folder / "path" / "glimpse"
    package.parent.mkdir()
    package.symlink_to(tree / "glimpse")
    for sub in ("envs", "agents"):  # where the installed package finds them
        (tree / "glimpse" / sub).symlink_to(tree / sub)
    return package.parent


def measure(python_path: str | None, seconds: float, sizes: list[int]) -> list[float]:
    env = dict(os.environ)
    if python_path:
        env["PYTHONPATH"] = python_path  # ahead of the installed package
    command = [sys.executable, "-c", MEASURE, str(seconds), *map(str, sizes)]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return [float(v) for v in output.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="HEAD~1", help="the earlier revision")
    parser.add_argument("--pairs", type=int, default=5, help="alternating before/now pairs")
    parser.add_argument("--envs", type=int, nargs="+", default=[16, 1024])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        before_path = str(checkout(args.before, Path(folder)))
        ratios: list[list[float]] = [[] for _ in args.envs]
        print(f"steps/s, {args.before} then the working tree; Glimpse/ClutteredMNIST60-v0")
        for pair in range(args.pairs):
            before = measure(before_path, args.seconds, args.envs)
            now = measure(None, args.seconds, args.envs)
            for i, (b, n) in enumerate(zip(before, now, strict=True)):
                ratios[i].append(n / b)
            print(f"pair {pair + 1}: before {before}, now {now}")
    for n, values in zip(args.envs, ratios, strict=True):
        print(f"{n} envs: now / before, median of {len(values)} pairs: "
              f"{statistics.median(values):.3f} (pairs: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
