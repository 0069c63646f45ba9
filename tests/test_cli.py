"""The command line: help lists the subcommands; bad flags fail with a message, not a traceback."""

import subprocess
import sys

import pytest

from rnnkit import cell_names
from rnnkit.cli import main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "cells"):
        assert command in out


def test_python_dash_m_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "rnnkit", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "demo" in r.stdout


def test_cells_lists_the_registry(capsys):
    assert main(["cells"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == cell_names()


@pytest.mark.parametrize("argv, message", [
    (["demo", "--cells", "elman,nope"], "unknown cell name 'nope'"),
    (["demo", "--lengths", "50,x"], "expected comma-separated integers"),
    (["demo", "--lengths", "1"], "expected integers >= 2"),
    (["demo", "--hidden-size", "0"], "expected a positive int"),
    (["demo", "--seconds", "-3"], "expected a positive float"),
    (["demo", "--no-such-flag"], "unrecognized arguments"),
    (["train"], "invalid choice"),
])
def test_bad_flags_fail_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
