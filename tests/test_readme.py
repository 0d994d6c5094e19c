"""README.md as written: its Python blocks run, in order, in one fresh interpreter (as a user pastes
them), and every command it shows (``python -m experiments.…``, ``torchrun … -m experiments.fit``,
``make …``) is parsed by that command's own option checks, so no option or value in it is stale."""
import os
import re
import shlex
import subprocess
import sys
from importlib import import_module

import click
import pytest

from .conftest import REPO

README = (REPO / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _commands() -> list[list[str]]:
    """Every experiments command in the README: shell blocks and inline code alike."""
    text = "\n".join(_blocks("bash")) + "\n" + "\n".join(re.findall(r"`([^`\n]+)`", README))
    text = text.replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        match = re.search(r"-m (experiments\.\w+)(.*)", line)
        if match:
            found.append([match.group(1), *shlex.split(match.group(2))])
    return found


def test_the_readme_is_a_short_user_guide():
    assert len(README.splitlines()) <= 250
    assert len(_blocks("python")) >= 2 and len(_commands()) >= 20


def test_every_python_block_runs_as_written(data_root, tmp_path):
    script = "\n\n".join(_blocks("python"))
    env = {**os.environ, "PYRO_PSTN_DATA": str(data_root), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "accuracy" in result.stdout and "(1, 100, 4, 1)" in result.stdout


def _parse(module: str, args: list[str]) -> None:
    command, name = import_module(module).main, module
    while isinstance(command, click.Group):  # our groups take no options of their own
        assert args and args[0] in command.commands, f"{module}: {args[:1]} is not a sub-command"
        name, command, args = args[0], command.commands[args[0]], args[1:]
    command.make_context(name, list(args))  # parses and checks every option, runs nothing


@pytest.mark.parametrize("argv", _commands(), ids=lambda argv: " ".join(argv)[:80])
def test_every_command_in_the_readme_parses(argv, data_root, monkeypatch):
    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    _parse(argv[0], argv[1:])


def test_every_make_target_in_the_readme_exists():
    makefile = (REPO / "Makefile").read_text()
    targets = {t for block in _blocks("bash") for t in re.findall(r"^make ([\w-]+)", block, flags=re.M)}
    targets |= set(re.findall(r"`make ([\w-]+)`", README))
    assert targets and all(re.search(rf"^{t}:", makefile, flags=re.M) for t in targets), targets
