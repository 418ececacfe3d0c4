"""The built wheel installs one top-level package, glimpse, and works outside the checkout."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

USE_INSTALLED = """
import sys
import gymnasium, glimpse, glimpse.envs, glimpse.agents.registry
site = sys.argv[1]
assert glimpse.__file__.startswith(site), glimpse.__file__
assert glimpse.envs.__file__.startswith(site), glimpse.envs.__file__
ids = [i for i in gymnasium.registry if i.startswith("Glimpse/") and "Folder" not in i
       and "Fashion" not in i]
for env_id in ids:
    gymnasium.make(env_id).reset(seed=0)
    gymnasium.make_vec(env_id, num_envs=2).reset(seed=0)
for name in ("envs", "agents"):
    try:
        __import__(name)
    except ImportError:
        continue
    raise AssertionError(f"the wheel installs a top-level {name}")
print(len(ids), "ids")
"""


def test_the_wheel_holds_only_glimpse_and_works_outside_the_checkout(tmp_path):
    # Without build isolation where setuptools is at hand (fast, offline); else pip fetches it.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w",
         str(tmp_path / "dist"), *isolation],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("glimpse_attention-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
        names = set(archive.namelist())
    assert {t for t in top if not t.endswith(".dist-info")} == {"glimpse"}
    assert {"glimpse/envs/glimpse_env.py", "glimpse/agents/recipes.toml",
            "glimpse/agents/py.typed"} <= names  # fmt: skip

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    data = Path(os.environ.get("GLIMPSE_DATA", "")).resolve()  # the tests' MNIST (conftest)
    env = {**os.environ, "PYTHONPATH": str(site), "GLIMPSE_DATA": str(data)}
    away = tmp_path / "elsewhere"  # no checkout on the path: only the installed files
    away.mkdir()
    used = subprocess.run([sys.executable, "-c", USE_INSTALLED, str(site)], cwd=away, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert used.returncode == 0, used.stderr[-2000:]
    script = site / "bin" / "glimpse"
    listed = subprocess.run([sys.executable, str(script), "recipes"], cwd=away, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "mnist-6-ram" in listed.stdout
    helped = subprocess.run([sys.executable, str(script), "train", "ram", "--help"], cwd=away,
                            env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert helped.returncode == 0 and "--location-std" in helped.stdout
