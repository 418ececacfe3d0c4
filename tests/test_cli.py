"""The command line: data commands, help, and the exit status of user errors."""

from __future__ import annotations

import subprocess
import sys

from PIL import Image

from glimpse.cli import main


def test_help_lists_the_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as exit:
        assert exit.code == 0
    assert "data" in capsys.readouterr().out


def test_data_check_reports_mnist(capsys):
    main(["data", "check"])
    out = capsys.readouterr().out
    assert "mnist: ok" in out


def test_data_show_writes_a_labelled_grid(tmp_path):
    out = tmp_path / "grid.png"
    code = main(
        ["data", "show", "--task", "cluttered", "--size", "100", "--n", "6", "--columns", "3",
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    with Image.open(out) as grid:
        width, height = grid.size
    assert width > 3 * 100 and height > 2 * 100  # 3 columns, 2 rows of 100 px canvases or larger


def test_user_errors_exit_2_with_one_paragraph_and_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "glimpse.cli", "data", "show", "--task", "folder", "--root",
         str(tmp_path / "missing")],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "does not exist" in message and "--root" in message
    lines = result.stderr.splitlines()  # one paragraph, wrapped to a readable width
    assert all(line.strip() for line in lines)
    assert all(len(line) <= 90 or " " not in line.strip() for line in lines)


def test_a_path_longer_than_the_message_width_stays_whole(tmp_path):
    root = tmp_path / ("a_folder_name_long_enough_to_pass_the_width_" * 3) / "missing"
    result = subprocess.run(
        [sys.executable, "-m", "glimpse.cli", "data", "show", "--task", "folder", "--root",
         str(root)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert str(root) in result.stderr.split()  # one word on one line, as the shell can take it
