"""connect(share=...) and card.transaction() on the direct path (the
simulated reader): every connection exclusive, the transaction a
process-local lock; typed errors for bad values and misuse.  The PC/SC
side runs against pcscd in tests/test_pcsc_share.py."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from helpers_reader import sim_reader
from scardio import IOCTL, errors
from scardio.aio import AsyncReader
from scardio.card import CardDisconnectedError, TransactionError

ECHO = "80 EE 00 00 02 CAFE 02"


@pytest.fixture
def reader_sim():
    with sim_reader() as (reader, sim):
        sim.insert()
        yield reader, sim


def test_share_values_on_the_direct_path(reader_sim) -> None:
    reader, _ = reader_sim
    for share in (None, "shared", "exclusive"):
        card = reader.connect(share=share)
        assert card.share == "exclusive" and card.info()["share"] == "exclusive"
        assert card.transmit(ECHO).sw == 0x9000
        card.disconnect()
    for bad in ("bogus", "SHARED", 1, b"shared"):
        with pytest.raises(ValueError, match="'shared' or 'exclusive'"):
            reader.connect(share=bad)  # type: ignore[arg-type]
    assert reader.card is None


def test_the_extension_ioctls_are_answered_by_the_direct_backend(reader_sim) -> None:
    reader, _ = reader_sim
    dev = reader.device
    for value in (0, 1, 2):
        assert dev.ioctl(IOCTL.SET_SHARE_MODE, value.to_bytes(4, "little"), 4) == \
            (1).to_bytes(4, "little")
    with pytest.raises(errors.ScardioError):
        dev.ioctl(IOCTL.SET_SHARE_MODE, (3).to_bytes(4, "little"), 4)
    with pytest.raises(errors.ScardioError):
        dev.ioctl(IOCTL.SET_SHARE_MODE, b"\x01", 4)
    assert dev.ioctl(IOCTL.BEGIN_TRANSACTION) == b""
    assert dev.ioctl(IOCTL.END_TRANSACTION) == b""


def test_a_transaction_keeps_other_threads_out_until_it_ends(reader_sim) -> None:
    reader, _ = reader_sim
    card = reader.connect()
    started = threading.Event()
    events: list[tuple[str, float]] = []

    def other() -> None:
        started.set()
        events.append(("other sent", time.monotonic()))
        card.transmit(ECHO)
        events.append(("other answered", time.monotonic()))
    with card.transaction() as inside:
        assert inside is card
        t = threading.Thread(target=other)
        t.start()
        assert started.wait(5)
        time.sleep(0.1)  # the other thread is blocked on the lock; order is checked below
        assert card.transmit(ECHO).sw == 0x9000  # the holder's own calls go through
        events.append(("end", time.monotonic()))
    t.join(5)
    assert [e for e, _ in events] == ["other sent", "end", "other answered"]


def test_misuse_is_typed(reader_sim) -> None:
    reader, _ = reader_sim
    card = reader.connect()
    with card.transaction():
        with pytest.raises(TransactionError, match="do not nest"):
            with card.transaction():
                pass
        assert issubclass(TransactionError, errors.InvalidStateError)
    # An exception in the block ends the transaction and frees the lock.
    with pytest.raises(KeyError):
        with card.transaction():
            raise KeyError("boom")
    assert reader.session.transaction is None and not reader._lock._is_owned()
    box: list[int] = []
    th = threading.Thread(target=lambda: box.append(card.transmit(ECHO).sw))
    th.start()
    th.join(5)
    assert box == [0x9000]
    # disconnect() inside ends it; afterwards the card refuses one.
    with card.transaction():
        card.disconnect()
    assert reader.session.transaction is None
    with pytest.raises(CardDisconnectedError):
        with card.transaction():
            pass
    assert not reader._lock._is_owned()


def test_a_card_removed_inside_a_transaction(reader_sim) -> None:
    reader, sim = reader_sim
    card = reader.connect()
    with pytest.raises(errors.NoCardError):
        with card.transaction():
            sim.remove()
            card.transmit(ECHO)
    assert reader.session.transaction is None and not card.connected
    sim.insert()
    card = reader.connect()
    with card.transaction():
        assert card.transmit(ECHO).sw == 0x9000


def test_async_transaction_and_share(reader_sim) -> None:
    reader, _ = reader_sim

    async def main() -> list[str]:
        areader = AsyncReader(reader)
        card = await areader.connect(share="shared")
        order: list[str] = []

        async def other() -> None:
            order.append("other sent")
            await card.transmit(ECHO)
            order.append("other answered")
        async with card.transaction() as inside:
            task = asyncio.ensure_future(other())
            await asyncio.sleep(0.05)
            assert (await inside.transmit(ECHO)).sw == 0x9000
            with pytest.raises(TransactionError):
                async with card.transaction():
                    pass
            order.append("end")
        await task
        with pytest.raises(ValueError):
            await areader.connect(share="bogus")
        assert card.share == "exclusive"
        await card.disconnect()
        return order
    assert asyncio.run(main()) == ["other sent", "end", "other answered"]


def test_the_share_mode_asked_is_sent_only_when_it_changes() -> None:
    names: list[str] = []
    with sim_reader(trace=lambda r: names.append(r.name)) as (reader, sim):
        def connect(share):
            names.clear()
            card = reader.connect(share=share)
            sent = [n for n in names if n == "SET_SHARE_MODE"]
            names.clear()
            card.disconnect()
            return sent, [n for n in names if n == "SET_SHARE_MODE"]
        sim.insert()
        assert connect(None) == ([], [])  # the device's own: nothing to say
        assert connect("exclusive") == (["SET_SHARE_MODE"], ["SET_SHARE_MODE"])
        assert connect(None) == ([], [])  # the disconnect put the default back
        # A connect that fails after asking leaves the mode unknown: the
        # next one asks again, even for the default.
        sim.remove()
        with pytest.raises(errors.NoCardError):
            reader.connect(share="shared")
        sim.insert()
        assert connect(None) == (["SET_SHARE_MODE"], [])
        assert connect(None) == ([], [])


def test_a_bounded_transaction_gives_up_on_another_threads(reader_sim) -> None:
    reader, _ = reader_sim
    card = reader.connect()
    with pytest.raises(ValueError):
        card.transaction(timeout=-1)
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with card.transaction():
            holding.set()
            release.wait(5)
    t = threading.Thread(target=holder)
    t.start()
    assert holding.wait(5)
    started = time.monotonic()
    with pytest.raises(errors.TimeoutError):
        with card.transaction(timeout=0.2):
            pass
    assert 0.15 < time.monotonic() - started < 3
    release.set()
    t.join(5)
    with card.transaction(timeout=5):  # bounded, on the direct path: at once
        assert card.transmit(ECHO).sw == 0x9000
    assert reader.session.transaction is None


def test_a_bounded_async_transaction_gives_up_on_another_tasks(reader_sim) -> None:
    reader, _ = reader_sim

    async def main() -> None:
        card = await AsyncReader(reader).connect()
        holding, release = asyncio.Event(), asyncio.Event()

        async def holder() -> None:
            async with card.transaction():
                holding.set()
                await release.wait()
        task = asyncio.ensure_future(holder())
        await holding.wait()
        with pytest.raises(errors.TimeoutError):
            async with card.transaction(timeout=0.1):
                pass
        release.set()
        await task
        async with card.transaction(timeout=5):
            assert (await card.transmit(ECHO)).sw == 0x9000
        await card.disconnect()
    asyncio.run(main())
