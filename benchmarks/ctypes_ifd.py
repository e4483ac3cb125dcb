"""A ctypes binding of a pcsc-lite IFD-handler driver: the naive baseline.

This is what a user would write in an afternoon to drive a reader driver
from Python without a compiled extension, written to be reasonable rather
than slow: argtypes / restype are declared once, the receive buffer, length
and protocol headers are allocated once per channel and reused, and the
response is sliced out of the buffer with one copy.  ctypes releases the
GIL around every foreign call, as scardio does.

Drivers that import ``log_msg`` (pcscd exports it; vpcd needs it) cannot be
dlopen()ed from a plain process: a tiny shim library defining the log
functions is compiled with gcc on first use and loaded RTLD_GLOBAL first.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import (POINTER, Structure, byref, c_char_p, c_long, c_ubyte,
                    c_ulong, c_void_p)
from typing import Optional

import ccompile
from ccompile import CProgram

DWORD = c_ulong  # unsigned long on Linux (8 bytes on LP64)
RESPONSECODE = c_long

IFD_SUCCESS = 0
IFD_ICC_PRESENT = 615
IFD_ICC_NOT_PRESENT = 616
IFD_POWER_UP = 500
IFD_POWER_DOWN = 501
IFD_RESET = 502
MAX_RESPONSE = 65536 + 2

_SHIM_SOURCE = r"""
void log_msg(const int priority, const char *fmt, ...) { (void)priority; (void)fmt; }
void log_xxd(const int priority, const char *msg, const unsigned char *buffer,
             const int size) { (void)priority; (void)msg; (void)buffer; (void)size; }
"""
_shim = None


class IfdError(OSError):
    def __init__(self, what: str, rc: int):
        super().__init__(f"{what} failed: IFD code {rc}")
        self.rc = rc


class SCARD_IO_HEADER(Structure):
    _fields_ = [("Protocol", DWORD), ("Length", DWORD)]


_shim_program = CProgram("ctypes-shim", _SHIM_SOURCE, ["-shared", "-fPIC"],
                         output="liblogshim.so")


def _load_log_shim() -> None:
    """Compile and load (RTLD_GLOBAL) a library exporting log_msg/log_xxd."""
    global _shim
    if _shim is not None:
        return
    if not ccompile.have_gcc():
        raise OSError("the driver needs log_msg and gcc is not available to build a shim")
    _shim = ctypes.CDLL(_shim_program.path(), mode=ctypes.RTLD_GLOBAL)


def cleanup() -> None:
    _shim_program.cleanup()


def load_driver(path: str) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        if "log_" not in str(exc):
            raise
        _load_log_shim()
        lib = ctypes.CDLL(path)
    u8p = POINTER(c_ubyte)
    lib.IFDHCreateChannelByName.argtypes = [DWORD, c_char_p]
    lib.IFDHCloseChannel.argtypes = [DWORD]
    lib.IFDHGetCapabilities.argtypes = [DWORD, DWORD, POINTER(DWORD), u8p]
    lib.IFDHSetProtocolParameters.argtypes = [DWORD, DWORD, c_ubyte, c_ubyte, c_ubyte,
                                              c_ubyte]
    lib.IFDHPowerICC.argtypes = [DWORD, DWORD, u8p, POINTER(DWORD)]
    lib.IFDHTransmitToICC.argtypes = [DWORD, SCARD_IO_HEADER, c_void_p, DWORD, u8p,
                                      POINTER(DWORD), POINTER(SCARD_IO_HEADER)]
    lib.IFDHICCPresence.argtypes = [DWORD]
    lib.IFDHControl.argtypes = [DWORD, DWORD, c_void_p, DWORD, u8p, DWORD, POINTER(DWORD)]
    for name in ("IFDHCreateChannelByName", "IFDHCloseChannel", "IFDHGetCapabilities",
                 "IFDHSetProtocolParameters", "IFDHPowerICC", "IFDHTransmitToICC",
                 "IFDHICCPresence", "IFDHControl"):
        getattr(lib, name).restype = RESPONSECODE
    return lib


class IfdChannel:
    """One reader (LUN) of a driver."""

    def __init__(self, library: str, device_name: str, lun: int = 0):
        self.lib = load_driver(library)
        self.lun = lun
        rc = self.lib.IFDHCreateChannelByName(lun, os.fsencode(device_name))
        if rc != IFD_SUCCESS:
            raise IfdError("IFDHCreateChannelByName", rc)
        self._rx = (c_ubyte * MAX_RESPONSE)()
        self._rx_len = DWORD()
        self._atr = (c_ubyte * 64)()
        self._atr_len = DWORD()
        self._send_pci = SCARD_IO_HEADER(1, ctypes.sizeof(SCARD_IO_HEADER))
        self._recv_pci = SCARD_IO_HEADER(1, ctypes.sizeof(SCARD_IO_HEADER))
        self._ctl_out = (c_ubyte * 1024)()
        self._ctl_len = DWORD()
        self.protocol = 1  # T number used by transmit

        # Bind the hot entry points once.
        self._transmit = self.lib.IFDHTransmitToICC
        self._presence = self.lib.IFDHICCPresence

    def close(self) -> None:
        if self.lib is not None:
            self.lib.IFDHCloseChannel(self.lun)
            self.lib = None

    def __enter__(self) -> "IfdChannel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def present(self) -> bool:
        rc = self._presence(self.lun)
        if rc in (IFD_SUCCESS, IFD_ICC_PRESENT):
            return True
        if rc == IFD_ICC_NOT_PRESENT:
            return False
        raise IfdError("IFDHICCPresence", rc)

    def control(self, code: int, data: bytes = b"") -> bytes:
        self._ctl_len.value = 0
        rc = self.lib.IFDHControl(self.lun, code, data, len(data), self._ctl_out,
                                  len(self._ctl_out), byref(self._ctl_len))
        if rc != IFD_SUCCESS:
            raise IfdError("IFDHControl", rc)
        return bytes(self._ctl_out[:self._ctl_len.value])

    def power(self, action: int = IFD_POWER_UP) -> bytes:
        self._atr_len.value = len(self._atr)
        rc = self.lib.IFDHPowerICC(self.lun, action, self._atr, byref(self._atr_len))
        if rc != IFD_SUCCESS:
            raise IfdError("IFDHPowerICC", rc)
        return bytes(self._atr[:self._atr_len.value])

    def set_protocol(self, t: int = 1, ta1: Optional[int] = None) -> None:
        flags, pts1 = (1, ta1) if ta1 is not None else (0, 0)
        rc = self.lib.IFDHSetProtocolParameters(self.lun, 1 << t, flags, pts1, 0, 0)
        if rc != IFD_SUCCESS:
            raise IfdError("IFDHSetProtocolParameters", rc)
        self.protocol = t

    def connect(self) -> bytes:
        atr = self.power(IFD_POWER_UP)
        self.set_protocol(1, atr[2] if len(atr) > 2 else None)
        return atr

    def disconnect(self) -> None:
        self.power(IFD_POWER_DOWN)

    def transmit(self, apdu: bytes) -> bytes:
        self._rx_len.value = MAX_RESPONSE
        rc = self._transmit(self.lun, self._send_pci, apdu, len(apdu), self._rx,
                            byref(self._rx_len), byref(self._recv_pci))
        if rc != IFD_SUCCESS:
            raise IfdError("IFDHTransmitToICC", rc)
        return ctypes.string_at(self._rx, self._rx_len.value)


