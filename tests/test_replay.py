"""scardio.sim.ReplayCard: a recorded session played back as a card.

Sessions are recorded on the built-in simulated card (through the API and
through ``scardio apdu --record`` in a subprocess), then replayed by calling
the card's apdu() as the simulated reader does: the same answers, strict
mode's mismatches (6F 00, logged, listed with the expected command), loose
mode's matching by command bytes, bad files."""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scardio import Reader
from scardio.recording import RecordingFormatError, read_recording
from scardio.sim import AID, ATR_T0, ATR_T1, ReplayCard, ReplayMismatch, VirtualCard
from scardio.sim.replay import NO_PRECISE_DIAGNOSIS

SELECT_APP = bytes.fromhex("00A4040C08") + AID
SELECT_EF = bytes.fromhex("00A4000C020101")
READ16 = bytes.fromhex("00B0000010")
CHALLENGE = bytes.fromhex("0084000008")
ECHO4 = bytes.fromhex("80EE000004CAFEBABE04")
READ_PAST_END = bytes.fromhex("00B00FF810")
SESSION = [SELECT_APP, SELECT_EF, READ16, CHALLENGE, ECHO4, CHALLENGE, READ_PAST_END]


def _record(sim_device, sim, path: Path, commands: list[bytes], t0: bool = False
            ) -> list[bytes]:
    """Record `commands` on the built-in card; the answers as bytes."""
    sim.insert(t0=t0)
    with Reader(sim_device, power_down_timeout=0) as reader:
        card = reader.connect()
        with card.record(path):
            answers = [bytes(card.transmit(c)) for c in commands]
            card.disconnect()
    return answers


def _wire(path: Path) -> list[tuple[bytes, bytes]]:
    """What the card saw in a recording, in order."""
    return [pair for e in read_recording(path).exchanges for pair in e.wire]


@pytest.mark.parametrize("t0", [False, True], ids=["T=1", "T=0"])
def test_replay_answers_what_the_card_answered(sim_device, sim, tmp_path, t0):
    path = tmp_path / "s.jsonl"
    answers = _record(sim_device, sim, path, SESSION, t0=t0)
    card = ReplayCard(path)
    assert isinstance(card, VirtualCard)
    assert card.atr == (ATR_T0 if t0 else ATR_T1)
    seen = _wire(path)
    if t0:  # the card saw the T=0 follow-ups: 61xx + GET RESPONSE, 6Cxx + re-send
        assert len(seen) == len(SESSION) + 2
    for command, response in seen:
        assert card.apdu(command) == response
    assert card.mismatches == [] and card.remaining == []
    # the host-level answers are the recorded ones too
    assert [e.response for e in read_recording(path).exchanges] == answers


def test_replay_of_a_cli_recording(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SCARDIO_SIM"}
    proc = subprocess.run(
        [sys.executable, "-m", "scardio", "--sim", "1", "--insert", "--json", "apdu",
         "Simulated Reader 0", *(c.hex() for c in SESSION), "--record", "cli.jsonl"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)["responses"]
    card = ReplayCard(tmp_path / "cli.jsonl")
    assert len(printed) == len(SESSION)
    for command, shown in zip(SESSION, printed):  # T=1: one exchange per APDU
        assert card.apdu(command).hex().upper() == shown["data"] + shown["sw"]
    assert card.mismatches == [] and card.remaining == []


def test_strict_mismatch_answers_6f00_and_names_the_expected_command(
        sim_device, sim, tmp_path, caplog):
    path = tmp_path / "s.jsonl"
    _record(sim_device, sim, path, [SELECT_APP, SELECT_EF, READ16])
    card = ReplayCard(path)
    assert card.apdu(SELECT_APP) == b"\x90\x00"
    with caplog.at_level(logging.WARNING, logger="scardio.sim.replay"):
        assert card.apdu(READ16) == NO_PRECISE_DIAGNOSIS == b"\x6f\x00"
    [mm] = card.mismatches
    assert mm == ReplayMismatch(index=1, command=READ16, expected=SELECT_EF, line=3)
    assert "expected 00 A4 00 0C 02 01 01 (line 3)" in str(mm)
    assert any(r.levelname == "WARNING" and "00 B0 00 00 10" in r.getMessage()
               and "expected 00 A4 00 0C 02 01 01" in r.getMessage() for r in caplog.records)
    # the expected command is still the one awaited: the session goes on
    assert card.apdu(SELECT_EF) == b"\x90\x00"
    assert card.apdu(READ16)[-2:] == b"\x90\x00"
    assert card.remaining == []
    # past the end of the recording
    assert card.apdu(READ16) == NO_PRECISE_DIAGNOSIS
    assert card.mismatches[-1] == ReplayMismatch(4, READ16, None, 0)
    assert "is not in the recording" in str(card.mismatches[-1])
    assert len(card.mismatches) == 2
    card.rewind()
    assert card.mismatches == [] and card.apdu(SELECT_APP) == b"\x90\x00"


def test_strict_remaining_lists_what_was_never_asked(sim_device, sim, tmp_path):
    path = tmp_path / "s.jsonl"
    _record(sim_device, sim, path, [SELECT_APP, SELECT_EF, READ16])
    card = ReplayCard(path)
    card.apdu(SELECT_APP)
    assert [s.command for s in card.remaining] == [SELECT_EF, READ16]
    assert [s.line for s in card.remaining] == [3, 4]


def test_loose_mode_matches_by_command_in_order_then_wraps(sim_device, sim, tmp_path,
                                                          caplog):
    path = tmp_path / "s.jsonl"
    # GET CHALLENGE answers differently each time: three recorded answers
    answers = _record(sim_device, sim, path, [SELECT_APP, CHALLENGE, CHALLENGE, CHALLENGE,
                                              SELECT_EF, READ16])
    challenges = answers[1:4]
    assert len(set(challenges)) == 3
    card = ReplayCard(path, strict=False)
    # any order
    assert card.apdu(READ16) == answers[5]
    assert card.apdu(SELECT_EF) == b"\x90\x00"
    # equal commands: in recorded order, then again from the first
    got = [card.apdu(CHALLENGE) for _ in range(5)]
    assert got == challenges + challenges[:2]
    assert card.mismatches == []
    assert [s.command for s in card.remaining] == [SELECT_APP]
    with caplog.at_level(logging.WARNING, logger="scardio.sim.replay"):
        assert card.apdu(bytes.fromhex("00CA9F7F00")) == NO_PRECISE_DIAGNOSIS
    assert card.mismatches == [ReplayMismatch(7, bytes.fromhex("00CA9F7F00"), None, 0)]
    assert caplog.records
    card.rewind()
    assert card.apdu(CHALLENGE) == challenges[0]


def test_a_failed_exchange_replays_as_6f00_and_a_refused_one_not_at_all(sim_device, sim,
                                                                       tmp_path):
    path = tmp_path / "s.jsonl"
    sim.insert()
    with Reader(sim_device, power_down_timeout=0) as reader:
        card = reader.connect()
        with card.record(path):
            card.transmit(SELECT_APP)
            with pytest.raises(ValueError):
                card.transmit(b"\x00\xa4")          # refused: never reached the reader
            sim.remove()
            with pytest.raises(Exception):
                card.transmit(READ16)               # failed on the way: the card left
    replay = ReplayCard(path)
    assert replay.apdu(SELECT_APP) == b"\x90\x00"
    assert replay.apdu(READ16) == NO_PRECISE_DIAGNOSIS
    assert replay.mismatches == [] and replay.remaining == []


def test_sources_path_file_and_parsed_recording(sim_device, sim, tmp_path):
    path = tmp_path / "s.jsonl"
    _record(sim_device, sim, path, [SELECT_APP])
    with open(path, encoding="utf-8") as f:
        from_file = ReplayCard(f)
    for card in (ReplayCard(str(path)), from_file, ReplayCard(read_recording(path))):
        assert card.apdu(SELECT_APP) == b"\x90\x00"
    assert "strict" in repr(ReplayCard(path)) and "loose" in repr(ReplayCard(path,
                                                                             strict=False))


def test_power_hooks_do_not_move_the_replay(sim_device, sim, tmp_path):
    path = tmp_path / "s.jsonl"
    _record(sim_device, sim, path, [SELECT_APP, SELECT_EF])
    card = ReplayCard(path)
    card.power_up()
    assert card.apdu(SELECT_APP) == b"\x90\x00"
    card.reset(True)
    card.power_down()
    card.power_up()
    assert card.apdu(SELECT_EF) == b"\x90\x00"


def test_bad_files_are_typed_errors_with_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"format": "scardio-session", "version": 1, "time": "t", "reader": '
                    '"r", "atr": "3B00", "protocol": "T=1"}\n{"type": "apdu"}\n',
                    encoding="utf-8")
    with pytest.raises(RecordingFormatError) as info:
        ReplayCard(path)
    assert info.value.line == 2 and "line 2" in str(info.value)
    with pytest.raises(RecordingFormatError, match="empty file"):
        ReplayCard(io.StringIO(""))
    with pytest.raises(FileNotFoundError):
        ReplayCard(tmp_path / "nothing.jsonl")


# ---------------------------------------------------------------------------
# Replayed in the simulated reader (SimControl.insert(card=...)), through
# Card.transmit as an application would


def _replay_reader(device, card: ReplayCard) -> Reader:
    from scardio.sim import SimControl
    SimControl(device).insert(card=card)
    return Reader(device, power_down_timeout=0)


_replay_luns = itertools.count(0x900)  # apart from conftest's sim_device LUNs


@pytest.fixture
def replay_device():
    from scardio.sim import open_device
    dev = open_device(next(_replay_luns))
    yield dev
    dev.close()


@pytest.mark.parametrize("t0", [False, True], ids=["T=1", "T=0"])
def test_a_replayed_session_gives_the_application_the_same_answers(
        sim_device, sim, replay_device, tmp_path, t0):
    path = tmp_path / "s.jsonl"
    answers = _record(sim_device, sim, path, SESSION, t0=t0)
    replay = ReplayCard(path)
    with _replay_reader(replay_device, replay) as reader:
        card = reader.connect()
        assert card.atr_bytes == (ATR_T0 if t0 else ATR_T1)
        assert card.protocol_name == ("T=0" if t0 else "T=1")
        assert [bytes(card.transmit(c)) for c in SESSION] == answers
    assert replay.mismatches == [] and replay.remaining == []


def test_a_cli_recording_replays_in_the_simulated_reader(replay_device, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SCARDIO_SIM"}
    proc = subprocess.run(
        [sys.executable, "-m", "scardio", "--sim", "1", "--insert", "--card", "t0", "--json",
         "apdu", "Simulated Reader 0", *(c.hex() for c in SESSION), "--record", "cli.jsonl"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)["responses"]
    replay = ReplayCard(tmp_path / "cli.jsonl")
    with _replay_reader(replay_device, replay) as reader:
        card = reader.connect()
        got = [card.transmit(c) for c in SESSION]
    assert [(r.data.hex().upper(), f"{r.sw:04X}") for r in got] == \
        [(p["data"], p["sw"]) for p in printed]
    assert replay.mismatches == [] and replay.remaining == []


def test_a_strict_mismatch_reaches_the_application_as_6f00(sim_device, sim, replay_device,
                                                            tmp_path, caplog):
    path = tmp_path / "s.jsonl"
    _record(sim_device, sim, path, [SELECT_APP, SELECT_EF, READ16])
    replay = ReplayCard(path)
    with _replay_reader(replay_device, replay) as reader:
        card = reader.connect()
        assert card.transmit(SELECT_APP).sw == 0x9000
        with caplog.at_level(logging.WARNING, logger="scardio.sim.replay"):
            wrong = card.transmit(READ16)            # the application skipped a step
        assert wrong.sw == 0x6F00 and wrong.data == b""
        assert card.transmit(SELECT_EF).sw == 0x9000  # still expected, still answered
        assert card.transmit(READ16).data == bytes(range(16))
    assert replay.mismatches == [ReplayMismatch(1, READ16, SELECT_EF, 3)]
    assert any("expected 00 A4 00 0C 02 01 01" in r.getMessage() for r in caplog.records)


def test_loose_replay_in_the_simulated_reader(sim_device, sim, replay_device, tmp_path):
    path = tmp_path / "s.jsonl"
    answers = _record(sim_device, sim, path, [SELECT_APP, SELECT_EF, READ16, CHALLENGE],
                      t0=True)
    replay = ReplayCard(path, strict=False)
    with _replay_reader(replay_device, replay) as reader:
        card = reader.connect()
        assert bytes(card.transmit(CHALLENGE)) == answers[3]   # out of order
        assert bytes(card.transmit(READ16)) == answers[2]
        assert bytes(card.transmit(CHALLENGE)) == answers[3]   # recorded once: again
    assert replay.mismatches == []


# ---------------------------------------------------------------------------
# docs/virtual-cards.md's record-and-replay examples run as shown

DOC = Path(__file__).resolve().parent.parent / "docs" / "virtual-cards.md"


def test_the_record_and_replay_docs_run(tmp_path):
    if not DOC.is_file():
        pytest.skip("needs the source tree (docs/)")
    import re
    import shlex
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Record and replay"):]
    commands = [line for block in re.findall(r"^```\n(.*?)^```", section, re.M | re.S)
                for line in block.splitlines() if line.startswith("scardio ")]
    assert len(commands) == 1 and "--record session.jsonl" in commands[0]
    env = {k: v for k, v in os.environ.items() if k != "SCARDIO_SIM"}
    proc = subprocess.run([sys.executable, "-m", "scardio", *shlex.split(commands[0])[1:]],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    python = re.findall(r"^```python\n(.*?)^```", section, re.M | re.S)
    replay_block = next(b for b in python if "ReplayCard(" in b)
    proc = subprocess.run([sys.executable, "-c", replay_block], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_timed_out_exchange_replays_as_a_mute_card(sim_device, sim, replay_device,
                                                     tmp_path):
    from scardio import errors
    from scardio.sim import EntryPoint, Fault
    path = tmp_path / "s.jsonl"
    sim.insert()
    with Reader(sim_device, power_down_timeout=0) as reader:
        card = reader.connect()
        with card.record(path):
            card.transmit(SELECT_APP)
            sim.fault(EntryPoint.TRANSMIT, Fault.BLOCK)
            with pytest.raises(errors.TimeoutError):
                card.transmit(SELECT_EF, timeout=0.2)    # the driver never answers
            sim.stop()
            card.transmit(SELECT_EF)
    failed = read_recording(path).exchanges[1]
    assert failed.error == "TimeoutError" and failed.wire == ((SELECT_EF, None),)
    replay = ReplayCard(path)
    with _replay_reader(replay_device, replay) as reader:
        card = reader.connect()
        assert card.transmit(SELECT_APP).sw == 0x9000
        with pytest.raises(errors.TimeoutError):
            card.transmit(SELECT_EF)                     # mute again, at once
        assert card.transmit(SELECT_EF).sw == 0x9000
    assert replay.mismatches == [] and replay.remaining == []
