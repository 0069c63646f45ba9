"""The examples in the docstrings run and print what they say."""

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import rnnkit

# rnnkit.gpu's kernel modules import triton (an optional dependency: the test extra has it)
TRITON = importlib.util.find_spec("triton") is not None
MODULES = sorted(
    m.name for m in pkgutil.walk_packages(rnnkit.__path__, "rnnkit.")
    if m.name != "rnnkit.__main__" and (TRITON or not m.name.startswith("rnnkit.gpu."))
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_readme_opens_with_the_two_commands():
    from pathlib import Path

    head = (Path(__file__).parent.parent / "README.md").read_text().splitlines()[:10]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


def test_example_configs_load():
    from pathlib import Path

    from rnnkit.config import load_config

    files = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))
    assert files
    for path in files:
        load_config(path)  # raises ConfigError naming the file and key


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU", "IRNN", "Jordan", "FullyRecurrent",
                                  "Clockwork", "SCRN", "CTRNN", "RecurrentNetwork"])
def test_every_facades_forward_documents_its_arguments(name):
    """help(rnnkit.LSTM) shows what forward takes and returns, not nn.Module's generic text."""
    import inspect

    doc = inspect.getdoc(getattr(rnnkit, name).forward) or ""
    assert "Define the computation" not in doc
    for word in ("hx", "lengths", "output", "fused"):
        assert word in doc or "RecurrentNetwork.forward" in doc, (name, word)
