"""Inference FLOPs per image of RAM and the full-view baselines as the canvas grows.

Counted by ``torch.utils.flop_counter`` (no training needed: FLOPs do not depend on weights).
Cluttered canvases, 8 glimpses of 12 x 12 (3 scales at 60 px, 4 beyond), the baselines'
default sizes, soft attention with 8 steps.

    python benchmarks/cost.py
"""

from __future__ import annotations

from glimpse.agents.cost import baseline_flops, ram_flops

SIZES = (60, 100, 200, 400)


def main() -> None:
    print("| canvas | RAM | soft attention | CNN | FC | soft / RAM |")
    print("|---|---|---|---|---|---|")
    for size in SIZES:
        settings = {"task": "cluttered", "size": size, "glimpse_size": 12, "scale_factor": 2,
                    "num_scales": 3 if size == 60 else 4, "glimpses": 8}  # fmt: skip
        ram = ram_flops(settings)
        soft, cnn, fc = (baseline_flops(name, settings) for name in ("soft", "cnn", "fc"))
        print(f"| {size} | {ram:,} | {soft:,} | {cnn:,} | {fc:,} | {soft / ram:.1f} |")


if __name__ == "__main__":
    main()
