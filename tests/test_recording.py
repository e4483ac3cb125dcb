"""Recording a card session (scardio.recording): Card.record(), the file
format it writes, ``scardio apdu --record`` as a user runs it, and
read_recording's errors on bad files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from scardio import Reader, errors
from scardio._core import CardBase
from scardio.card import Card, CardDisconnectedError
from scardio.recording import (FORMAT, FORMAT_VERSION, Recorder, RecordingFormatError,
                               read_recording)
from scardio.sim import AID, ATR_T0, ATR_T1, SimControl
from scardio.sequences.disconnect import Disposition

SELECT_APP = bytes.fromhex("00A4040C08") + AID
SELECT_EF = bytes.fromhex("00A4000C020101")
READ16 = bytes.fromhex("00B0000010")
READ_PAST_END = bytes.fromhex("00B00FF810")   # 8 bytes left: T=0 answers 6C08
ECHO4 = bytes.fromhex("80EE000004CAFEBABE04")  # case 4: T=0 answers 6104 first


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def reader(sim_device):
    r = Reader(sim_device, power_down_timeout=0)
    yield r
    r.close()


def _connect(reader: Reader, sim: SimControl, t0: bool = False) -> Card:
    sim.insert(t0=t0)
    return reader.connect()


# ---------------------------------------------------------------------------
# The API and the lines it writes


def test_record_writes_a_header_and_one_line_per_transmit(reader, sim, tmp_path):
    card = _connect(reader, sim)
    path = tmp_path / "s.jsonl"
    with card.record(path) as rec:
        assert isinstance(rec, Recorder) and not rec.closed
        answers = [card.transmit(SELECT_APP), card.transmit(SELECT_EF),
                   card.transmit(READ16.hex()), card.transmit(list(ECHO4))]
    assert rec.closed and rec.exchanges == 4
    lines = _lines(path)
    head = lines[0]
    assert head["format"] == FORMAT and head["version"] == FORMAT_VERSION
    assert head["reader"] == reader.name and head["atr"] == ATR_T1.hex().upper()
    assert head["protocol"] == "T=1" and head["connect_actions"] == card.connect_actions
    assert head["time"].endswith("+00:00")
    body = lines[1:-1]
    assert [ln["type"] for ln in body] == ["apdu"] * 4
    assert [ln["command"] for ln in body] == [c.hex().upper() for c in
                                              (SELECT_APP, SELECT_EF, READ16, ECHO4)]
    assert [ln["response"] for ln in body] == [bytes(a).hex().upper() for a in answers]
    assert answers[2].data == bytes(range(16)) and answers[3].data == bytes.fromhex("CAFEBABE")
    assert all("wire" not in ln for ln in body)  # T=1: one exchange each
    ts = [ln["t"] for ln in body]
    assert ts == sorted(ts) and all(t >= 0 for t in ts)
    assert all(ln["us"] > 0 for ln in body)
    assert lines[-1]["type"] == "end" and lines[-1]["exchanges"] == 4
    assert read_recording(path).complete


def test_t0_lines_keep_the_exchanges_the_reader_saw(reader, sim, tmp_path):
    # the card sees 61xx + GET RESPONSE and 6Cxx + a re-send: the line says
    # so, so that a replay can give the host's own follow-ups their answers
    card = _connect(reader, sim, t0=True)
    path = tmp_path / "t0.jsonl"
    with card.record(path):
        echo = card.transmit(ECHO4)
        card.transmit(SELECT_APP)
        card.transmit(SELECT_EF)
        tail = card.transmit(READ_PAST_END)
    assert echo.data == bytes.fromhex("CAFEBABE") and echo.sw == 0x9000
    assert tail.data == bytes(range(0xF8, 0x100)) and tail.sw == 0x9000
    lines = _lines(path)
    assert lines[0]["protocol"] == "T=0" and lines[0]["atr"] == ATR_T0.hex().upper()
    assert lines[1]["wire"] == [[ECHO4.hex().upper(), "6104"],
                                ["00C0000004", "CAFEBABE9000"]]
    assert lines[1]["response"] == "CAFEBABE9000"
    assert "wire" not in lines[2] and "wire" not in lines[3]
    assert lines[4]["wire"] == [[READ_PAST_END.hex().upper(), "6C08"],
                                ["00B00FF808", bytes(tail).hex().upper()]]


def test_a_failing_transmit_is_an_error_line(reader, sim, tmp_path):
    card = _connect(reader, sim)
    path = tmp_path / "err.jsonl"
    with card.record(path):
        card.transmit(SELECT_APP)
        with pytest.raises(ValueError):
            card.transmit("00 A4 zz")            # not an APDU at all
        with pytest.raises(ValueError):
            card.transmit(b"\x00\xa4")           # refused before any I/O
        sim.remove()
        with pytest.raises(errors.NoCardError):
            card.transmit(READ16)                # sent; the card was gone
    lines = _lines(path)
    not_apdu, too_short, gone = lines[2], lines[3], lines[4]
    assert not_apdu["type"] == "error" and not_apdu["command"] is None
    assert not_apdu["wire"] == [] and not_apdu["error"] == "HexError"
    assert too_short["command"] == "00A4" and too_short["wire"] == []
    assert too_short["error"] == "APDULengthError" and "too short" in too_short["message"]
    assert gone["error"] == "NoCardError" and gone["wire"] == [[READ16.hex().upper(), None]]
    assert lines[-1] == {"type": "end", "t": lines[-1]["t"], "exchanges": 4}
    rec = read_recording(path)
    assert [e.error for e in rec.exchanges] == [None, "HexError", "APDULengthError",
                                                "NoCardError"]
    assert rec.exchanges[3].wire == ((READ16, None),)


def test_disconnect_is_recorded_and_ends_the_recording(reader, sim, tmp_path):
    card = _connect(reader, sim)
    path = tmp_path / "d.jsonl"
    rec = card.record(path)
    card.transmit(SELECT_APP)
    card.disconnect(Disposition.RESET)
    assert rec.closed
    lines = _lines(path)
    assert lines[-2]["type"] == "disconnect" and lines[-2]["disposition"] == "RESET"
    assert lines[-1]["type"] == "end"
    card2 = reader.connect()
    with card2.record(tmp_path / "d2.jsonl"):
        with card2:                    # the card's own with-block disconnects (LEAVE)
            card2.transmit(SELECT_APP)
    assert [ln.get("disposition") for ln in _lines(tmp_path / "d2.jsonl")
            if ln.get("type") == "disconnect"] == ["LEAVE"]
    card3 = reader.connect()
    with card3.record(tmp_path / "d3.jsonl"):
        card3.disconnect(2)           # an int disposition is named too
    assert _lines(tmp_path / "d3.jsonl")[-2]["disposition"] == "UNPOWER"


def test_a_card_not_recorded_keeps_the_binding_transmit(reader, sim):
    # the whole of "costs nothing when unused": the class's transmit is the
    # binding's, and only a card being recorded has one of its own
    assert Card.transmit is CardBase.transmit
    card = _connect(reader, sim)
    assert "transmit" not in vars(card) and card.transmit.__func__ is CardBase.transmit
    rec = card.record(io.StringIO())
    assert vars(card)["transmit"] == rec.transmit
    rec.close()
    assert "transmit" not in vars(card) and "disconnect" not in vars(card)
    assert card.transmit.__func__ is CardBase.transmit
    rec.close()  # idempotent


def test_record_refuses_a_second_recorder_and_a_gone_card(reader, sim):
    card = _connect(reader, sim)
    with card.record(io.StringIO()):
        with pytest.raises(ValueError, match="already being recorded"):
            card.record(io.StringIO())
    card.disconnect()
    with pytest.raises(CardDisconnectedError):
        card.record(io.StringIO())


def test_an_open_file_is_flushed_per_line_and_left_open(reader, sim, tmp_path):
    card = _connect(reader, sim)
    path = tmp_path / "f.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        with card.record(f):
            card.transmit(SELECT_APP)
            # another reader of the file sees every line written so far
            assert len(path.read_text(encoding="utf-8").splitlines()) == 2
            partial = read_recording(path)
            assert not partial.complete and len(partial.exchanges) == 1
        assert not f.closed
        f.write("")  # still writable


def test_a_crashed_session_leaves_a_readable_prefix(tmp_path):
    # the process dies without closing anything: the lines written are there
    path = tmp_path / "crash.jsonl"
    script = f"""
import os, scardio
from scardio.sim import open_device, SimControl
dev = open_device(3)
SimControl(dev).insert()
card = scardio.Reader(dev).connect()
card.record({str(path)!r})
card.transmit(bytes.fromhex("80EE000001"))
card.transmit(bytes.fromhex("80EE000002"))
os._exit(7)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 7, proc.stderr
    rec = read_recording(path)
    assert not rec.complete
    assert [e.command.hex() for e in rec.exchanges] == ["80ee000001", "80ee000002"]
    assert [e.response for e in rec.exchanges] == [b"\x00\x90\x00", b"\x00\x01\x90\x00"]


def test_lines_follow_the_order_the_card_saw_from_many_threads(reader, sim, tmp_path):
    card = _connect(reader, sim)
    path = tmp_path / "threads.jsonl"
    with card.record(path):
        def work(k: int) -> None:
            for i in range(50):
                card.transmit(bytes([0x80, 0xEE, k, i, 0x01]))
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    rec = read_recording(path)
    assert len(rec.exchanges) == 200
    ts = [e.t for e in rec.exchanges]
    assert ts == sorted(ts)
    for k in range(4):  # each thread's commands in its own order
        mine = [e.command[3] for e in rec.exchanges if e.command[2] == k]
        assert mine == list(range(50))


# ---------------------------------------------------------------------------
# scardio apdu --record, as a user runs it


def _scardio(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SCARDIO_SIM"}
    return subprocess.run([sys.executable, "-m", "scardio", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("json_out", [False, True])
def test_cli_apdu_record(tmp_path, json_out):
    args = ["--sim", "1", "--insert", "--card", "t0"] + (["--json"] if json_out else [])
    proc = _scardio(*args, "apdu", "Simulated Reader 0", SELECT_APP.hex(), "80 EE 00 00 04 "
                    "CA FE BA BE 04", "--record", "session.jsonl", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rec = read_recording(tmp_path / "session.jsonl")
    assert rec.complete and rec.header.atr == ATR_T0 and rec.header.protocol == "T=0"
    assert rec.header.reader == "scardio Simulated Reader 0"
    assert [e.command for e in rec.exchanges] == [SELECT_APP, ECHO4]
    assert [e.response for e in rec.exchanges] == [b"\x90\x00",
                                                   bytes.fromhex("CAFEBABE9000")]
    events = [e for e in rec.entries if not hasattr(e, "command")]
    assert [e.kind for e in events] == ["disconnect", "end"]
    assert events[0].detail == {"disposition": "UNPOWER"}
    if json_out:
        assert [r["data"] for r in json.loads(proc.stdout)["responses"]][1].upper() == \
            "CAFEBABE"


def test_cli_record_to_an_unwritable_path_is_a_usage_error(tmp_path):
    proc = _scardio("--sim", "1", "--insert", "apdu", "Simulated Reader 0", "80EE000001",
                    "--record", str(tmp_path / "no" / "such" / "dir.jsonl"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--record: cannot write" in proc.stderr and "Reader:" not in proc.stdout


def test_cli_record_leaves_no_file_when_the_session_never_started(tmp_path):
    proc = _scardio("--sim", "1", "apdu", "Simulated Reader 0", "80EE000001",  # no card
                    "--record", "s.jsonl", cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert not (tmp_path / "s.jsonl").exists()


def test_cli_help_documents_record():
    proc = subprocess.run([sys.executable, "-m", "scardio", "apdu", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--record FILE" in proc.stdout


# ---------------------------------------------------------------------------
# Bad files: typed errors with the line number

HEADER = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "time": "t",
                     "reader": "r", "atr": "3B00", "protocol": "T=1"})
APDU_LINE = '{"type": "apdu", "t": 0.1, "command": "00A4", "response": "9000"}'


@pytest.mark.parametrize("text, line, reason", [
    ("", 0, "empty file"),
    ("[1, 2]\n", 1, "JSON object"),
    ("{\n", 1, "not JSON"),
    ('{"format": "other"}\n', 1, "not a scardio session recording"),
    (HEADER.replace('"version": 1', '"version": 9') + "\n", 1, "version 9 is not supported"),
    (HEADER.replace('"3B00"', '"3Z"') + "\n", 1, "'atr' is not hex"),
    (HEADER.replace('"r"', "5") + "\n", 1, "'reader' must be a string"),
    (HEADER + "\n" + APDU_LINE + "\n\n", 3, "empty line"),
    (HEADER + "\n" + APDU_LINE + "\nnot json\n" + APDU_LINE + "\n", 3, "not JSON"),
    (HEADER + "\n" + APDU_LINE.replace("9000", "90") + "\n", 2, "at least SW1 SW2"),
    (HEADER + "\n" + APDU_LINE.replace('"00A4"', "null") + "\n", 2,
     "'command' must be a hex string"),
    (HEADER + "\n" + APDU_LINE.replace('"t": 0.1', '"t": "soon"') + "\n", 2,
     "'t' must be a number"),
    (HEADER + "\n" + APDU_LINE.replace('"apdu"', '"apdus"') + "\n", 2, "unknown line type"),
    (HEADER + "\n" + '{"type": "error", "t": 1, "command": null, "wire": []}' + "\n", 2,
     "needs 'error'"),
    (HEADER + "\n" + '{"type": "error", "t": 1, "command": "00", "error": "E", "wire": '
     '[["00"]]}' + "\n", 2, "'wire' item 0"),
    (HEADER + "\n" + APDU_LINE[:-1] + ', "wire": [["00A4", "XX"]]}' + "\n", 2,
     "'wire[0] response' is not hex"),
    (HEADER + "\n" + HEADER + "\n", 2, "a second header"),
])
def test_bad_recordings_are_refused_with_the_line(tmp_path, text, line, reason):
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RecordingFormatError) as info:
        read_recording(path)
    assert info.value.line == line and reason in info.value.reason, str(info.value)
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}, line {line}: " if line else f"{path}: ")
    assert isinstance(info.value, ValueError)


def test_not_utf8_and_missing_files(tmp_path):
    path = tmp_path / "bin.jsonl"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(RecordingFormatError, match="not UTF-8"):
        read_recording(path)
    with pytest.raises(FileNotFoundError):
        read_recording(tmp_path / "absent.jsonl")


def test_a_last_line_cut_short_is_left_out():
    text = HEADER + "\n" + APDU_LINE + "\n" + APDU_LINE[:20]
    rec = read_recording(io.StringIO(text))
    assert len(rec.exchanges) == 1 and not rec.complete
    # a complete but unknown last line is still an error
    with pytest.raises(RecordingFormatError):
        read_recording(io.StringIO(HEADER + "\n" + '{"type": "x", "t": 0}'))


def test_unknown_keys_are_ignored():
    text = (HEADER[:-1] + ', "note": "x"}\n' + APDU_LINE[:-1] + ', "extra": [1]}\n')
    rec = read_recording(io.StringIO(text))
    assert rec.exchanges[0].command == bytes.fromhex("00A4")
    assert rec.exchanges[0].wire == ((bytes.fromhex("00A4"), b"\x90\x00"),)


# ---------------------------------------------------------------------------
# The asyncio card records the same lines


def test_the_asyncio_card_records_the_same_way(sim_device, sim, tmp_path):
    import asyncio
    from scardio import aio
    sim.insert(t0=True)
    path = tmp_path / "a.jsonl"

    async def session() -> list[bytes]:
        areader = aio.AsyncReader(Reader(sim_device, power_down_timeout=0))
        try:
            acard = await areader.connect()
            plain_transmit = type(acard).transmit
            with acard.record(path) as rec:
                assert vars(acard)["transmit"] == rec._transmit_async
                answers = [bytes(await acard.transmit(c)) for c in (SELECT_APP, ECHO4)]
                with pytest.raises(ValueError):
                    await acard.transmit(b"\x00")
                await acard.disconnect(Disposition.UNPOWER)
            assert rec.closed and "transmit" not in vars(acard)
            assert type(acard).transmit is plain_transmit
            return answers
        finally:
            await areader.aclose()

    answers = asyncio.run(session())
    lines = _lines(path)
    assert lines[0]["protocol"] == "T=0"
    assert [ln["type"] for ln in lines[1:]] == ["apdu", "apdu", "error", "disconnect", "end"]
    assert [ln["response"] for ln in lines[1:3]] == [a.hex().upper() for a in answers]
    assert lines[2]["wire"] == [[ECHO4.hex().upper(), "6104"], ["00C0000004", "CAFEBABE9000"]]
    assert lines[3]["wire"] == [] and lines[3]["error"] == "APDULengthError"
    assert lines[4]["disposition"] == "UNPOWER"


def test_recording_inside_a_transaction_uses_the_transactions_lock(sim_device, sim, tmp_path):
    """A recorded transmit inside a transaction holds no second lock: the
    transaction's is already the caller's (blocking and asyncio alike)."""
    import asyncio
    from scardio import aio
    sim.insert()
    reader = Reader(sim_device, power_down_timeout=0)
    card = reader.connect()
    with card.transaction(), card.record(tmp_path / "s.jsonl"):
        assert card.transmit(ECHO4).sw == 0x9000
    card.disconnect()

    async def session() -> int:
        acard = await aio.AsyncReader(reader).connect()
        async with acard.transaction():
            with acard.record(tmp_path / "a.jsonl"):
                resp = await acard.transmit(ECHO4)
        await acard.disconnect()
        return resp.sw

    assert asyncio.run(asyncio.wait_for(session(), 20)) == 0x9000  # a deadlock fails
    assert [ln["type"] for ln in _lines(tmp_path / "a.jsonl")[1:]] == ["apdu", "end"]
