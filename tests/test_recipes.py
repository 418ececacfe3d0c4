"""Recipes, the agent table, run configs that record everything, and the migration of old runs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from glimpse.agents.recipes import Recipe, load_recipes, recipe
from glimpse.agents.registry import AGENTS
from glimpse.agents.runs import (
    FORMAT,
    check_complete,
    config_differences,
    migrate_config,
    read_run_config,
    resolve_config,
)
from glimpse.cli import main
from glimpse.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
DATA = Path(__file__).with_name("data")
PUBLISHED = [(r.name, run) for r in load_recipes().values() for run in r.runs]


def test_every_published_run_is_in_results_and_every_result_has_a_recipe():
    published = {run for _, run in PUBLISHED}
    assert published and all((RESULTS / run / "config.json").is_file() for run in published)
    folders = {p.parent.name for p in RESULTS.glob("*/config.json")}
    assert folders == published  # the others live in results/experiments/


@pytest.mark.parametrize(("name", "run"), PUBLISHED)
def test_a_published_recipe_still_trains_what_its_run_ran(name, run):
    """Frozen: the recipe resolved today equals the committed run's config.json, field by
    field (apart from where the run lives and how it used the machine)."""
    found = read_run_config(RESULTS / run)
    wanted = recipe(name)
    seed = {"run": {"seed": found["run"]["seed"]}}
    config = resolve_config(wanted.agent, wanted.env_id, [wanted.layer(), seed], name)
    assert config_differences(config, found) == []
    assert found["recipe"] == name and run == f"{name}-seed{found['run']['seed']}"


def test_every_recipe_named_in_the_readme_and_docs_exists():
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    named = {m for t in texts if t.exists()
             for m in re.findall(r"--recipe[ =]([\w.-]+)", t.read_text())}  # fmt: skip
    assert named, "the README shows --recipe commands"
    assert named <= set(load_recipes()), named - set(load_recipes())


def test_inheritance_merges_sections_and_keeps_descriptions_apart():
    six, seven = recipe("mnist-6-ram"), recipe("mnist-7-ram")
    assert (seven.agent, seven.env_id) == (six.agent, six.env_id)
    assert seven.settings["train"] == six.settings["train"]
    assert seven.settings["env"]["glimpses"] == 7 and "env" not in six.settings
    assert seven.runs != six.runs and seven.paper != six.paper


def test_recipe_file_errors_are_clear(tmp_path):
    bad = tmp_path / "recipes.toml"
    bad.write_text('[a]\ninherits = "b"\n[b]\ninherits = "a"\n')
    with pytest.raises(ConfigError, match="inherit in a circle"):
        load_recipes(bad)
    bad.write_text('[a]\nagent = "ram"\nenv_id = "Glimpse/MNIST-v0"\nmodle = { x = 1 }\n')
    with pytest.raises(ConfigError, match="unknown keys"):
        load_recipes(bad)
    with pytest.raises(ConfigError, match="Did you mean mnist-6-ram"):
        recipe("mnist-6-rma")


@pytest.mark.parametrize("agent", AGENTS)
def test_a_run_config_records_every_setting_with_version_and_commit(agent):
    config = resolve_config(agent, "Glimpse/MNIST-v0", [])
    check_complete(config, "resolved")  # every field of every section, no other
    assert config["format"] == FORMAT and config["glimpse_version"]
    assert config["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?",
                                                        config["git_commit"])  # fmt: skip


def test_a_missing_setting_is_refused_not_filled_from_todays_defaults(tmp_path):
    config = resolve_config("ppo", "Glimpse/MNIST-v0", [])
    del config["model"]["head_units"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="lacks head_units"):
        read_run_config(tmp_path)
    old = json.loads((DATA / "config-format1-mnist-ppo-seed1.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="glimpse migrate"):
        read_run_config(tmp_path)


@pytest.mark.parametrize(
    ("run", "kept"),
    [("mnist-6-ram-seed1", "core"), ("catch-full-view-seed1", "lstm_hidden_size"),
     ("compare-clutteredmnist60-deep-cnn-seed1", "conv_channels")],
)  # fmt: skip
def test_a_format_2_run_from_before_an_added_setting_reads_with_what_it_ran_with(
    tmp_path, run, kept
):
    from glimpse.agents.runs import ADDED_SINCE_FORMAT_2

    config = read_run_config(Path("results") / run)
    added = [(s, k) for s, k in ADDED_SINCE_FORMAT_2 if k in config.get(s, {})]
    assert ("env", "screen") in added  # every agent has some; each has those of its sections
    for section, key in added:
        del config[section][key]
    value = config["model"].pop(kept)  # not an added setting: still refused
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=f"lacks {kept}:"):
        read_run_config(tmp_path)
    config["model"][kept] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    read = read_run_config(tmp_path)
    assert [read[s][k] for s, k in added] == [ADDED_SINCE_FORMAT_2[s, k] for s, k in added]
    assert migrate_config(config) == read


def test_migration_writes_what_an_old_run_ran_with(tmp_path):
    """mnist-ppo-seed1 was trained before head_units existed, with SB3's 64-unit heads; the
    hyperparameter file of the time said 256 later. Its migrated config says 64."""
    old = json.loads((DATA / "config-format1-mnist-ppo-seed1.json").read_text())
    assert "head_units" not in old["model"]
    new = migrate_config(old)
    check_complete(new, "migrated")
    assert new["model"]["head_units"] == 64 and new["model"]["advantage"] == "shared"
    assert new["model"]["total_steps"] == old["model"]["total_steps"]
    assert new["env"]["history"] is True  # what PPO's environment always had
    assert new["run"]["seed"] == old["train"]["seed"] and "epochs" not in new.get("train", {})
    assert new["migrated_from_format"] == 1 and migrate_config(new) is new
    soft = migrate_config(json.loads((DATA / "config-format1-soft.json").read_text()))
    assert soft["model"]["conv_channels"] == 16 and "channels" not in soft["model"]
    # the command line does the same to a run folder, once
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert main(["migrate", str(tmp_path)]) == 0
    assert read_run_config(tmp_path) == new


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ppo", "--lr", "1e-3"], "--lr is not an option of ppo (it is one of ram, soft"),
        (["ppo", "--epochs", "5"], "--epochs is not an option of ppo"),
        (["ram", "--total-steps", "9"], "--total-steps is not an option of ram"),
        (["ram", "--step-reward", "1"], "--step-reward is not an option of ram"),
        (["cnn", "--glimpses", "4"], "--glimpses is not an option of cnn"),
        (["--recipe", "mnist-ppo", "--lr", "1e-3"], "--lr is not an option of ppo"),
        (["ram", "--size", "40"], "size=40 does nothing for the mnist task"),
        (["ram", "--recipe", "mnist-ppo"], "mnist-ppo trains ppo, not ram"),
    ],
)
def test_an_option_the_agent_does_not_use_exits_2_with_one_message(
    tmp_path, capsys, args, message
):
    command = ["train", *args, "--env", "Glimpse/MNIST-v0", "--runs-dir", str(tmp_path)]
    assert main(command) == 2
    error = " ".join(capsys.readouterr().err.split())  # one message, wrapped to 90 columns
    assert message in error and error.startswith("glimpse: error:")
    assert not any(tmp_path.iterdir())


def test_an_agents_help_shows_only_its_options(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "ppo", "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    assert "--total-steps" in text and "--history-pooling" in text and "--lr " not in text
    assert "--epochs" not in text and "--location-std" not in text


def test_a_recipe_trains_under_its_name_with_a_seed_and_overrides_of_the_run(tmp_path):
    tiny = Recipe("tiny", "ram", "Glimpse/MNIST-v0", {"train": {"epochs": 1, "epoch_size": 64}})
    config = resolve_config(tiny.agent, tiny.env_id, [tiny.layer(), {"run": {"seed": 3}}], "tiny")
    assert config["recipe"] == "tiny" and config["run"]["seed"] == 3
    assert config["env"]["action_type"] == "continuous"  # fixed by the agent
    with pytest.raises(ConfigError, match="ram runs with action_type='continuous'"):
        resolve_config("ram", "Glimpse/MNIST-v0", [{"env": {"action_type": "discrete"}}])


@pytest.mark.parametrize(
    "run", ["mnist-6-ram-seed1", "mnist-ppo-seed1", "compare-clutteredmnist60-soft-seed1"]
)
def test_a_published_run_evaluates_to_its_published_figure(run, tmp_path):
    """Spot checks of fast ones (all of them: python benchmarks/published.py check); PPO's
    zip was saved before its classes moved into glimpse.agents, and still loads."""
    from glimpse.agents.runs import evaluate_run

    copy = shutil.copytree(RESULTS / run, tmp_path / run)  # eval writes beside the run
    recorded = json.loads((copy / "test.json").read_text())["test_error"]
    assert evaluate_run(copy)["error"] == pytest.approx(recorded, abs=1e-9)
