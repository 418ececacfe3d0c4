"""Multi-process training with torchrun on CPU (gloo backend, 2 processes)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_torchrun_trains_with_two_processes(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "-m", "glimpse.cli", "train", "--agent", "ram", "--env", "Glimpse/MNIST-v0",
         "--epochs", "2", "--epoch-size", "2048", "--batch-size", "64", "--val-size", "500",
         "--eval-episodes", "500", "--threads", "1", "--runs-dir", str(tmp_path),
         "--name", "ddp", "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = (tmp_path / "ddp/metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2]  # written once, by process 0
    assert records[0]["images"] == 2048  # the two processes share each epoch
    assert (tmp_path / "ddp/test.json").is_file()
    assert result.stdout.count("test_error") == 1
