"""USB readers plugged into and out of a running pcscd, for the reader
hotplug tests: inside a private mount and network namespace
(tests/pcscd_namespace.py) only, never on a real system.

pcsc-lite 1.9 on Linux learns of readers from libudev alone: its SIGUSR1
(``pcscd --hotplug``) re-reads no reader.conf file (checked: pcscd 1.9.9
logs the signal and adds nothing), so a reader cannot be added to a running
pcscd through its configuration.  pcscd's own libudev hotplug path is driven
here instead, with the kernel's part played by the test:

- /sys is a tmpfs holding a USB device and its interface per reader (the
  ``uevent``, ``idVendor``/``idProduct`` and ``serial`` files libudev and
  pcscd read), and pcscd runs with ``sysfs_shim.c`` preloaded, since
  libudev accepts a device directory only on a file system that says sysfs;
- pcscd's driver directory is bind-mounted over with one bundle per reader
  (an Info.plist for its vendor/product ID), whose driver is scardio's
  simulated reader;
- "plugging" sends the udev "add" message libudev's monitor receives (the
  ``libudev`` netlink header, the property list) to the udev multicast group
  of the namespace's own netlink; "unplugging" sends "remove".

Everything after that is pcscd's: it loads the bundle's driver, names the
reader ``"<friendly name> (<serial>) 00 00"``, removes it on "remove", and
tells its clients through the ``\\\\?PnP?\\Notification`` pseudo reader.
Stdlib only (the scenario scripts run under any Python)."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
DRIVER_DIR = "/usr/lib/pcsc/drivers"
VENDOR_ID = 0x1209  # pid.codes' test vendor ID
NETLINK_KOBJECT_UEVENT = 15
UDEV_GROUP = 2
UDEV_MAGIC = 0xFEEDCAFE
_MASK = 0xFFFFFFFF


def murmur_hash2(data: bytes) -> int:
    """MurmurHash2 with seed 0: libudev's hash of the subsystem and device
    type in its message header (its socket filter compares them)."""
    m = 0x5BD1E995
    h = len(data) & _MASK
    i, n = 0, len(data)
    while n >= 4:
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & _MASK
        k ^= k >> 24
        k = (k * m) & _MASK
        h = ((h * m) & _MASK) ^ k
        i, n = i + 4, n - 4
    if n == 3:
        h ^= data[i + 2] << 16
    if n >= 2:
        h ^= data[i + 1] << 8
    if n >= 1:
        h ^= data[i]
        h = (h * m) & _MASK
    h ^= h >> 13
    h = (h * m) & _MASK
    h ^= h >> 15
    return h


def unavailable() -> str | None:
    """Why the USB hotplug cannot be played here (None: it can)."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        return "no C compiler for the sysfs shim"
    if not os.path.isdir(DRIVER_DIR):
        return f"pcscd's driver directory {DRIVER_DIR} does not exist"
    return None


class UsbHotplug:
    """The fake USB bus of one namespace.  `readers` friendly names, one
    bundle (product ID 1..n) each; call :meth:`setup` before pcscd starts
    and give pcscd :meth:`pcscd_env`."""

    def __init__(self, work: Path, sim_library: str, readers: list[str]) -> None:
        self.work = work
        self.sim_library = sim_library
        self.readers = readers
        self.shim = work / "sysfs_shim.so"
        self._seq = 0

    def setup(self) -> None:
        cc = shutil.which("cc") or shutil.which("gcc") or "cc"
        subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(self.shim),
                        str(HERE / "sysfs_shim.c"), "-ldl"], check=True)
        drivers = self.work / "drivers"
        for n, name in enumerate(self.readers, 1):
            contents = drivers / f"scardio-hotplug-{n}.bundle" / "Contents"
            (contents / "Linux").mkdir(parents=True)
            shutil.copy(self.sim_library, contents / "Linux" / "libscardio_sim.so")
            (contents / "Info.plist").write_text(
                '<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict>\n'
                "<key>CFBundleExecutable</key><string>libscardio_sim.so</string>\n"
                f"<key>CFBundleName</key><string>scardio-hotplug-{n}</string>\n"
                "<key>ifdCapabilities</key><string>0x00000000</string>\n"
                "<key>ifdManufacturerString</key><string>scardio</string>\n"
                "<key>ifdProductString</key><string>simulated USB reader</string>\n"
                "<key>ifdVersionNumber</key><string>0x01</string>\n"
                f"<key>ifdVendorID</key><string>0x{VENDOR_ID:04X}</string>\n"
                f"<key>ifdProductID</key><string>0x{n:04X}</string>\n"
                f"<key>ifdFriendlyName</key><string>{name}</string>\n"
                "</dict></plist>\n")
        subprocess.run(["mount", "-t", "tmpfs", "scardio-sysfs", "/sys"], check=True)
        os.makedirs("/sys/bus/usb/devices")
        subprocess.run(["mount", "--bind", str(drivers), DRIVER_DIR], check=True)

    def pcscd_env(self) -> dict[str, str]:
        return dict(os.environ, LD_PRELOAD=str(self.shim))

    def name(self, n: int) -> str:
        """The name pcscd gives reader `n` (1-based)."""
        return f"{self.readers[n - 1]} (S{n}) 00 00"

    def _interface(self, n: int) -> str:
        """Reader n's USB interface, made in /sys once: its DEVPATH."""
        device = Path(f"/sys/devices/scardio-usb/usb1/1-{n}")
        interface = device / f"1-{n}:1.0"
        if not interface.exists():
            interface.mkdir(parents=True)
            files = {device: {"uevent": f"MAJOR=189\nMINOR={n}\nDEVNAME=bus/usb/001/{n:03d}\n"
                                        "DEVTYPE=usb_device\n",
                              "idVendor": f"{VENDOR_ID:04x}\n", "idProduct": f"{n:04x}\n",
                              "busnum": "1\n", "devnum": f"{n}\n", "serial": f"S{n}\n"},
                     interface: {"uevent": "DEVTYPE=usb_interface\nINTERFACE=11/0/0\n",
                                 "bInterfaceNumber": "00\n", "bInterfaceClass": "0b\n"}}
            for directory, contents in files.items():
                for file, text in contents.items():
                    (directory / file).write_text(text)
                (directory / "subsystem").symlink_to("/sys/bus/usb")
        return str(interface)[len("/sys"):]

    def _send(self, action: str, devpath: str) -> None:
        self._seq += 1
        props = {"ACTION": action, "DEVPATH": devpath, "SUBSYSTEM": "usb",
                 "DEVTYPE": "usb_interface", "INTERFACE": "11/0/0", "SEQNUM": str(self._seq)}
        body = b"".join(f"{k}={v}".encode() + b"\0" for k, v in props.items())
        header = struct.pack("8sIIIIIIII", b"libudev", socket.htonl(UDEV_MAGIC), 40, 40,
                             len(body), socket.htonl(murmur_hash2(b"usb")),
                             socket.htonl(murmur_hash2(b"usb_interface")), 0, 0)
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_KOBJECT_UEVENT) as s:
            s.bind((0, 0))
            s.sendto(header + body, (0, UDEV_GROUP))

    def plug(self, n: int) -> str:
        """Plug reader n in; its pcscd name."""
        self._send("add", self._interface(n))
        return self.name(n)

    def unplug(self, n: int) -> None:
        self._send("remove", self._interface(n))
