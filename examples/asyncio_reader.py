"""The same sequences with asyncio: no thread per call, nothing polled.

Run:  python examples/asyncio_reader.py

scardio.aio drives overlapped IOCTLs from the running loop (the readers'
completion descriptors are watched with loop.add_reader).  Here one task
waits for a card while another inserts it into the simulated reader.
"""

import asyncio

from scardio import aio
from scardio.sim import SimControl


async def main() -> None:
    async with await aio.open_reader("scardio Simulated Reader 0", sim=1) as reader:
        print("reader:", reader.name)

        async def insert_later() -> None:
            await asyncio.sleep(0.2)
            SimControl(reader.device).insert()   # the simulated reader's test hook

        # Both at once; gather() raises at once if either fails.
        await asyncio.gather(reader.wait_for_card(timeout=30), insert_later())
        async with await reader.connect() as card:
            rsp = await card.transmit("00 A4 04 00 08 F07363617264696F")
            print(f"SELECT: SW={rsp.sw:04X}")
            rsp = await card.transmit("00 84 00 00 08")  # GET CHALLENGE
            print(f"challenge: {rsp.data.hex()} SW={rsp.sw:04X}")

        # Events from many readers arrive on one async iterator.  The card
        # is in, so the first is its arrival; then we take it out.
        async with aio.AsyncMonitor([reader]) as monitor:
            async for event in monitor.events(timeout=5, count=2):
                print("event:", event.kind, event.reader_name)
                if event.kind == "arrival":
                    SimControl(reader.device).remove()


asyncio.run(main())
