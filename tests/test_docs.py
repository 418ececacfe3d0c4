"""Every code block of the README and the documentation pages runs, and shows what it says.

How a page's blocks are run, by their fence's language:

- ``python``: the page's blocks run in order in one namespace; each must assert something
  about its result (the assertion is what a reader checks against).
- ``bash``: each line is a command a user types. ``glimpse ...`` and ``python benchmarks/...``
  run from a scratch folder that holds copies of the ``results/`` runs the block names (so
  nothing in the repository changes). ``glimpse train`` runs with a tiny budget under the name
  the full command would give its run, so the block's later commands find it. ``glimpse eval``
  of a published run must print its published test error; ``viz`` and ``curves --plot`` must
  write their file. Set-up lines (``python3 -m venv``, ``pip install``, ``export``) are what
  ``.ci/run`` has already done.
- ``console``: ``$ command`` lines, each followed by output lines that must appear in the
  command's real output, in order (``...`` stands for any lines). A command shown printing
  ``error:`` must exit with status 2 and no traceback.
- anything else (``text``): not run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SETUP_COMMANDS = ("python3 -m venv", "pip install", ".venv/bin/pip install", "cd ")

# Train commands run with these settings added: enough to write a whole run folder.
TINY_BUDGET = {
    "train": ["--epochs", "1", "--epoch-size", "256", "--eval-episodes", "256", "--threads", "1"],
    "ppo": ["--total-steps", "512", "--n-envs", "8", "--n-steps", "32", "--batch-size", "64",
            "--eval-every", "256", "--eval-episodes", "256", "--threads", "1"],
}  # fmt: skip
# Benchmark scripts run with these arguments added (argparse keeps an option's last value).
QUICK_BENCHMARK = {
    "train_speed.py": ["--seconds", "0.5"],
    "env.py": ["--seconds", "0.3", "--ppo-steps", "2048", "--ppo-envs", "16", "--ppo-threads", "1"],
    "sensor.py": ["--seconds", "0.3"],
    "ppo_speed.py": ["--rounds", "1", "--rollouts", "1"],
    "tasks.py": [],
    "cost.py": [],
    "latency.py": ["--seconds", "0.1", "--batches", "1"],
    "published.py": [],
    "ram_policy_limit.py": [],
    "catch_table.py": ["--envs", "Glimpse/Catch-v0"],  # one screen of the two
}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def code_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, with the line their fence opens on."""
    blocks, text = [], page.read_text()
    for match in re.finditer(r"^```(\w*)[^\n]*\n(.*?)^```", text, flags=re.DOTALL | re.M):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(page, line, match[1], match[2]))
    return blocks


BLOCKS = [block for page in PAGES for block in code_blocks(page)]
PYTHON_PAGES = sorted({block.page for block in BLOCKS if block.language == "python"})
SHELL_BLOCKS = [block for block in BLOCKS if block.language in ("bash", "console")]


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """``(command, expected output lines)`` of a bash or console block; a bash line's
    ``&&`` separates commands, a trailing backslash continues one."""
    lines = block.code.replace("\\\n", " ").splitlines()
    found: list[tuple[str, list[str]]] = []
    for line in lines:
        if block.language == "console":
            if line.startswith("$ "):
                found.append((line[2:].strip(), []))
            elif found:
                found[-1][1].append(line.rstrip())
            continue
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            found.extend((part.strip(), []) for part in line.split("&&"))
    return found


def run_command(command: str, scratch: Path, env: dict[str, str], shows_error: bool) -> str:
    """Runs one documented command in ``scratch``; returns its output (stdout and stderr).
    A command whose documented output ``shows_error`` must fail as a user's mistake does:
    exit status 2, no traceback."""
    if command.startswith(SETUP_COMMANDS) or " -m pytest" in command:
        return ""  # what .ci/run has done, and is doing
    if command.startswith("export "):
        name, value = command.removeprefix("export ").split("=", 1)
        env[name] = _absolute_data_path(value)
        return ""
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value glimpse ...
        name, value = words.pop(0).split("=", 1)
        env[name] = _absolute_data_path(value)
    program = words[0].removeprefix(".venv/bin/")
    if program == "glimpse":
        argv = [sys.executable, "-m", "glimpse.cli", *_glimpse_arguments(words[1:])]
    elif program in ("python", "python3") and words[1].startswith("benchmarks/"):
        script = words[1].removeprefix("benchmarks/")
        assert script in QUICK_BENCHMARK, f"no quick setting for benchmarks/{script}"
        argv = [sys.executable, str(ROOT / words[1]), *words[2:], *QUICK_BENCHMARK[script]]
    else:
        raise AssertionError(f"the docs test does not know how to run: {command}")
    result = subprocess.run(argv, cwd=scratch, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    if shows_error:
        assert result.returncode == 2 and "Traceback" not in output, (command, output)
        return output
    assert result.returncode == 0, f"{command} failed:\n{output[-3000:]}"
    _check_result(words[1:] if program == "glimpse" else [], output, scratch)
    return output


def _absolute_data_path(value: str) -> str:
    """``../shared/data/mnist`` as the README writes it, from the repository root."""
    return str((ROOT / value).resolve()) if value.startswith(".") else value


def _glimpse_arguments(arguments: list[str]) -> list[str]:
    """A train command gets a tiny budget, under the run name the full command would give;
    a compare gets one seed and one epoch."""
    from glimpse.agents.runs import run_name
    from glimpse.cli import parse_train_command
    from glimpse.errors import GlimpseError

    if arguments[:1] == ["train"] and "--resume" not in arguments:
        try:
            command = parse_train_command(arguments[1:])
        except (GlimpseError, SystemExit):  # a documented mistake, or --help: run as written
            return arguments
        assert command is not None and command.config is not None
        section = "ppo" if "total_steps" in command.config.get("model", {}) else "train"
        return [*arguments, *TINY_BUDGET[section], "--name", run_name(command.config),
                "--no-progress"]  # fmt: skip
    if arguments[:1] == ["compare"]:
        return [*arguments, "--seeds", "1", "--epochs", "1", "--epoch-size", "256",
                "--scaling-sizes", "60", "--no-progress"]  # fmt: skip
    return arguments


def _check_result(arguments: list[str], output: str, scratch: Path) -> None:
    """What each command must have done beyond exiting with 0."""
    published_model = "--locations" not in arguments  # told where to look, it errs more
    if arguments[:1] == ["eval"] and arguments[1].startswith("results/") and published_model:
        published = json.loads((scratch / arguments[1] / "test.json").read_text())["test_error"]
        said = (f"error {published:.2f}%", f"missed {published:.2f}%")  # a class, or a game
        assert any(text in output for text in said), (arguments, output)
    if arguments[:1] == ["viz"] or "--plot" in arguments:
        written = re.search(r"wrote (\S+)", output)
        assert written and (scratch / written[1]).is_file(), output


def _copy_published_runs(block: Block, scratch: Path) -> None:
    for name in set(re.findall(r"results/([\w.-]+(?:/[\w.-]+)?)", block.code)):
        source = ROOT / "results" / name
        if source.is_dir():
            shutil.copytree(source, scratch / "results" / name, dirs_exist_ok=True)
        elif source.is_file():
            (scratch / "results" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, scratch / "results" / name)


def _output_matches(expected: list[str], output: str) -> bool:
    """Each expected line appears in ``output``, in order, however the output wraps its lines;
    ``...`` skips any lines."""
    text, position = " ".join(output.split()), 0
    for want in (line for line in expected if line.strip() and line.strip() != "..."):
        found = text.find(" ".join(want.split()), position)
        if found < 0:
            return False
        position = found + len(want)
    return True


def test_the_pages_have_examples():
    assert len(PYTHON_PAGES) >= 2 and len(SHELL_BLOCKS) >= 5


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.language == "python"], ids=lambda block: block.name
)
def test_every_python_example_asserts_what_it_shows(block):
    assert re.search(r"^\s*assert ", block.code, flags=re.M), f"{block.name} asserts nothing"


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=lambda page: page.name)
def test_python_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").symlink_to(ROOT / "results")  # examples load published runs
    namespace: dict[str, object] = {}
    for block in code_blocks(page):
        if block.language == "python":
            exec(compile(block.code, block.name, "exec"), namespace)


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=lambda block: block.name)
def test_shell_examples_run(block, tmp_path):
    _copy_published_runs(block, tmp_path)
    env = dict(os.environ)
    for command, expected in commands(block):
        output = run_command(command, tmp_path, env, any("error:" in line for line in expected))
        assert _output_matches(expected, output), f"{command} printed:\n{output[-3000:]}"
