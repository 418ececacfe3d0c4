"""Multi-process training with torchrun on CPU (gloo backend, 2 processes)."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

# Runs the CLI under torchrun and saves each process's final weights, so the test can check
# that DistributedDataParallel kept the two replicas identical (it averages their gradients).
SAVE_EACH_RANK = """
import os, sys, torch
from glimpse.agents import trainer

train = trainer.Trainer.train

def train_and_save(self):
    summary = train(self)  # process 0 then loads the best weights; process 1 keeps the last
    if os.environ["RANK"] != "0":
        torch.save(self.model.state_dict(), sys.argv[1] + "/rank1.pt")
    return summary

trainer.Trainer.train = train_and_save
from glimpse.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_torchrun_trains_with_two_processes(tmp_path):
    script = tmp_path / "save_each_rank.py"
    script.write_text(SAVE_EACH_RANK)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
         str(tmp_path), "train", "ram", "--env", "Glimpse/MNIST-v0",
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

    # Each process drew its own episodes and location samples: only gradient averaging keeps
    # the replicas equal after training.
    rank0 = torch.load(tmp_path / "ddp/checkpoints/last.pt", weights_only=False)["model"]
    rank1 = torch.load(tmp_path / "rank1.pt")
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], rtol=1e-5, atol=1e-6, msg=name)
