"""``scardio --help`` and ``scardio COMMAND --help`` for every command the
parser has, as a user runs them (a subprocess): each exits 0 and shows every
option the parser defines and every option the docs (the cli module
docstring and README.md) say the command has, with the real defaults."""

from __future__ import annotations

import argparse
import os
import re

import pytest

from helpers_reader import run_cli
from scardio import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the scardio parser has no subcommands")


PARSER = cli.build_parser()
COMMANDS = _subparsers(PARSER)


def _parser_items(parser: argparse.ArgumentParser) -> list[str]:
    """What --help must show: every option string and every positional."""
    items = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            items += list(action.choices)
        elif action.option_strings:
            items += action.option_strings
        else:
            items.append(action.metavar if isinstance(action.metavar, str) else action.dest)
    return items


def _docstring_commands() -> dict[str, list[str]]:
    """command -> the options its line in the cli docstring names."""
    doc = cli.__doc__ or ""
    listing = doc.split("COMMAND ...", 1)[1].split("READER is", 1)[0]
    found = {}
    for line in listing.splitlines():
        m = re.match(r"    ([a-z][a-z0-9-]*)\b", line)
        if m:
            found[m.group(1)] = OPTION.findall(line)
    assert found, "the cli docstring lists no commands"
    return found


def _docstring_globals() -> list[str]:
    doc = cli.__doc__ or ""
    section = doc.split("Global options", 1)[1].split("Exit codes", 1)[0]
    opts = re.findall(r"^    (--[a-z][a-z0-9-]*)", section, re.M)
    assert opts, "the cli docstring lists no global options"
    return opts


def _readme_options() -> list[str]:
    if not os.path.exists(README):
        pytest.skip("needs the source tree (README.md)")
    with open(README, encoding="utf-8") as f:
        return sorted(set(OPTION.findall(f.read())))


def _readme_commands() -> list[str]:
    with open(README, encoding="utf-8") as f:
        return sorted(set(re.findall(r"`scardio ([a-z][a-z0-9-]*)", f.read())))


def _help(*argv: str) -> str:
    p = run_cli(*argv, "--help", env={"COLUMNS": "100"}, timeout=30)
    assert p.returncode == 0, (argv, p.stderr)
    assert p.stderr == "", (argv, p.stderr)
    assert p.stdout.startswith("usage: scardio"), (argv, p.stdout)
    return p.stdout


def _entry(help_text: str, option: str) -> str:
    """The option's entry in the options listing, wrapped lines joined."""
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"  -", line) and option in re.split(r"[ ,]+", line.strip()):
            entry = [line]
            for more in lines[i + 1:]:
                if not more.startswith("   "):  # the next option or section
                    break
                entry.append(more)
            return " ".join(" ".join(entry).split())
    raise AssertionError(f"{option} has no entry in:\n{help_text}")


def _check_defaults(help_text: str, parser: argparse.ArgumentParser) -> None:
    """Every '(default X' in an option's help is the value the option really
    defaults to (a subcommand's copy of a global option: the top level's)."""
    top = {a.dest: a.default for a in PARSER._actions}
    checked = 0
    for action in parser._actions:
        if not action.option_strings or not action.help or "default" not in action.help:
            continue
        entry = _entry(help_text, action.option_strings[-1])
        m = re.search(r"\(default ([^;),\s]+)", entry)
        if not m:
            continue  # worded otherwise ("default: ..."): nothing to compare
        checked += 1
        default = action.default
        if default is argparse.SUPPRESS:
            default = top[action.dest]
        shown = m.group(1)
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            assert float(shown) == default, entry
        else:
            assert shown == str(default), entry
    # every parser has the global options, whose help shows defaults
    assert checked >= 2


def test_top_level_help():
    text = _help()
    for item in _parser_items(PARSER):
        assert item in text, item
    _check_defaults(text, PARSER)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help(command):
    text = _help(command)
    sub = COMMANDS[command]
    assert f"usage: scardio {command}" in text
    for item in _parser_items(sub):
        assert item in text, (command, item)
    # The global options work after the command too, so its help shows them.
    for opt in _docstring_globals():
        assert opt in text, (command, opt)
    for opt in _docstring_commands().get(command, []):
        assert opt in text, (command, opt)
    _check_defaults(text, sub)


def test_the_docs_and_the_parser_list_the_same_commands():
    documented = _docstring_commands()
    assert sorted(documented) == sorted(COMMANDS)
    assert set(_readme_options()) and set(_readme_commands()) <= set(COMMANDS)


def test_every_documented_option_exists():
    """An option the docs mention but no parser has fails here."""
    known = set(_parser_items(PARSER))
    for sub in COMMANDS.values():
        known |= set(_parser_items(sub))
        for action in sub._actions:  # a command's own actions (card serve)
            if isinstance(action, argparse._SubParsersAction):
                for nested in action.choices.values():
                    known |= set(_parser_items(nested))
    documented = set(_docstring_globals()) | set(_readme_options())
    for opts in _docstring_commands().values():
        documented |= set(opts)
    assert documented - known == set()
    top = set(_parser_items(PARSER))
    assert set(_docstring_globals()) <= top
