"""The command APDUs every path sends (the simulated card's and the vpcd test
card's proprietary ECHO command, CLA 80 INS EE; see native/sim/sim_protocol.h).
"""

from __future__ import annotations

import struct

APDUS = {
    # case 2, 5 bytes: ECHO with Le = 1 -> 1 data byte + 9000
    "tx5": bytes.fromhex("80EE000001"),
    # case 4 short, 261 bytes: 255 data bytes, Le = 00 (256) -> 256 + 2 bytes
    "tx261": bytes.fromhex("80EE0000FF") + bytes(i & 0xFF for i in range(255)) + b"\x00",
    # case 4 extended, 4105 bytes: 4096 data bytes, extended Le 4096 -> 4098 bytes
    "tx4k": bytes.fromhex("80EE0000001000") + bytes(i & 0xFF for i in range(4096))
    + b"\x10\x00",
}

# Expected response lengths (data + SW1 SW2).
RESPONSE_LEN = {"tx5": 3, "tx261": 258, "tx4k": 4098}

IO_REQUEST_T1 = struct.pack("<II", 2, 8)  # SCARD_IO_REQUEST{T=1, 8}

# scardio TRANSMIT inputs and output sizes.
TRANSMIT_IN = {k: IO_REQUEST_T1 + v for k, v in APDUS.items()}
TRANSMIT_OUT = {k: 8 + max(RESPONSE_LEN[k], 258) for k in APDUS}

DESCRIPTION = {
    "tx5": "TRANSMIT 5-byte APDU (case 2)",
    "tx261": "TRANSMIT 261-byte short APDU (case 4, 255 data + Le)",
    "tx4k": "TRANSMIT 4 KiB extended APDU (4105 bytes, 4098-byte response)",
}
