"""What the command line loads before it does anything: ``scardio --help``
imports neither a command's implementation nor the layers below it, a
command builds only its own parser and imports only its own module, and
``scardio list`` only the running OS's discovery module.  Each check runs
the command in a fresh interpreter and reads its ``sys.modules``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import pytest

from scardio import cli
from scardio._cli import card_io

#: The modules of the command implementations (scardio._cli.outcome is the
#: exit codes main() returns, loaded with the parser).
COMMAND_MODULES = {"scardio._cli.readers", "scardio._cli.card_io", "scardio._cli.watch",
                   "scardio._cli.demo", "scardio._cli.atr_report",
                   "scardio._cli.card_serve", "scardio._cli.output",
                   "scardio._cli.opening"}
#: Never needed to print the help.
NOT_FOR_HELP = COMMAND_MODULES | {
    "scardio.discovery", "scardio.reader", "scardio.session", "scardio.constants",
    "scardio.apdu", "scardio.atr", "scardio.holders", "scardio.pcsc",
    "json", "threading", "typing", "dataclasses", "logging", "socket",
    "shutil", "zlib", "bz2", "lzma", "importlib.util",
}
OTHER_OS_DISCOVERY = {"scardio.discovery._macos", "scardio.discovery._windows",
                      "scardio.discovery._freebsd"}


def _loaded_by(argv: list[str], code: str = "") -> tuple[set[str], str]:
    """Modules a fresh interpreter holds after `main(argv)` (and `code`),
    less those of a bare one; and what main() printed."""
    script = ("import sys\n"
              "from scardio.cli import main\n"
              f"rc = main({argv!r})\n"
              f"{code}\n"
              "names = sorted(sys.modules)\n"
              "import json\n"
              "sys.stderr.write('\\nMODULES ' + json.dumps([rc, names]) + '\\n')\n")
    bare = ("import sys\n"
            "names = sorted(sys.modules)\n"
            "import json\n"
            "sys.stderr.write('MODULES ' + json.dumps([0, names]) + '\\n')\n")
    found = []
    for code_text in (script, bare):
        proc = subprocess.run([sys.executable, "-c", code_text], capture_output=True,
                              text=True, timeout=120, env=dict(os.environ, COLUMNS="100"))
        line = proc.stderr.rpartition("MODULES ")[2]
        assert line, proc.stdout + proc.stderr
        rc, names = json.loads(line)
        assert rc == 0, proc.stdout + proc.stderr
        found.append((set(names), proc.stdout))
    (after, stdout), (at_start, _) = found
    return after - at_start, stdout


def test_help_imports_no_command_and_no_layer_below():
    loaded, stdout = _loaded_by(["--help"])
    assert stdout.startswith("usage: scardio"), stdout
    assert {"scardio.cli", "argparse"} <= loaded
    assert sorted(loaded & NOT_FOR_HELP) == []


def test_the_checker_sees_what_a_command_loads():
    # the same check on a command that does load them: the set is not empty
    loaded, _ = _loaded_by(["atr", "3B 02 14 50"])
    assert {"scardio._cli.atr_report", "scardio._cli.output", "scardio.atr",
            "json"} <= loaded


def test_a_command_imports_its_own_module_only():
    loaded, _ = _loaded_by(["atr", "3B 02 14 50"])
    assert sorted(loaded & COMMAND_MODULES) == ["scardio._cli.atr_report",
                                                 "scardio._cli.output"]
    assert "scardio.discovery" not in loaded


def test_list_imports_only_this_os_discovery_module():
    if sys.platform != "linux":
        pytest.skip("names the Linux module")
    loaded, stdout = _loaded_by(["--sim", "1", "list"])
    assert "scardio Simulated Reader 0" in stdout
    assert {"scardio.discovery", "scardio.discovery._linux", "scardio._cli.readers"} <= loaded
    assert sorted(loaded & OTHER_OS_DISCOVERY) == []
    assert "scardio.reader" not in loaded
    # the other OSes' names still resolve, importing their module then
    loaded, _ = _loaded_by(["--sim", "1", "list"],
                           "import scardio.discovery as d; d.parse_ioreg_usb; "
                           "d.device_path_readers")
    assert {"scardio.discovery._macos", "scardio.discovery._windows"} <= loaded


def _command_action(parser: argparse.ArgumentParser) -> cli._Commands:
    for action in parser._actions:
        if isinstance(action, cli._Commands):
            return action
    raise AssertionError("no subcommands")


def test_parsing_builds_only_the_running_command_parser():
    parser = cli.build_parser()
    commands = _command_action(parser)
    assert commands._name_parser_map == {}
    args = parser.parse_args(["list", "--all"])
    assert args.command == "list" and args.all
    assert list(commands._name_parser_map) == ["list"]
    # reading choices builds the others, as before
    assert list(commands.choices) == list(cli.COMMAND_ARGUMENTS)
    assert all(isinstance(p, argparse.ArgumentParser) for p in commands.choices.values())
    assert sorted(commands._name_parser_map) == sorted(cli.COMMAND_ARGUMENTS)
    with pytest.raises(KeyError):
        commands.choices["nope"]


def test_every_command_has_its_runner():
    for name in cli.COMMAND_ARGUMENTS:
        runner = cli._runner(name)
        assert runner.__name__ == f"cmd_{name}", (name, runner)
    with pytest.raises(KeyError):
        cli._runner("nope")


def test_protocol_choices_are_the_protocols_apdu_knows():
    assert sorted(cli.PROTOCOL_NAMES) == sorted(card_io.PROTOCOLS)


@pytest.mark.parametrize("columns", [None, "100", "47", "0", "-3", "wide"])
def test_help_width_is_the_one_shutil_reports(monkeypatch, columns):
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert cli._terminal_columns() == shutil.get_terminal_size().columns
    # and the help is argparse's own at that width
    ours = cli.build_parser()
    theirs = cli.build_parser()
    theirs.formatter_class = argparse.HelpFormatter
    assert ours.format_help() == theirs.format_help()
    for name in ("apdu", "scan"):
        sub_ours = _command_action(ours).choices[name]
        sub_theirs = _command_action(theirs).choices[name]
        sub_theirs.formatter_class = argparse.HelpFormatter
        assert sub_ours.format_help() == sub_theirs.format_help()
