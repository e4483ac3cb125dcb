"""Who holds a reader: the process that has a reader's device open.

A reader driver opens its reader exclusively: it claims a USB reader's
interface through usbfs, opens a serial reader's tty, or (vpcd) listens on a
TCP port.  When another process, most often pcscd, did that first, the
driver's open fails with a bare error code.  This module finds, from what
the kernel publishes, whether the reader is held and by whom, so that the
error (and ``scardio list``) can say who holds the reader and how to free it.

Linux only; on every other platform each lookup finds nothing (Windows
reports a held reader itself, as a sharing violation from CreateFile).

What is read (all of it readable by any user, except the last):

- ``/sys/bus/usb/devices/*``: the USB device with the bus and address of the
  reader's device node, and its interface's ``driver`` link: an interface
  bound to ``usbfs`` is claimed by a process;
- ``/proc/net/tcp`` and ``/proc/net/tcp6``: a socket listening on the
  reader's port, and its inode;
- ``/proc/PID/comm``: process names (a running pcscd is named even when
  its descriptors cannot be read);
- ``/proc/PID/fd/*``: which process has the device node or the socket
  open.  Other users' descriptors need root: without them the holder is
  "another process", with pcscd named as the likely one when it runs.

The lookup costs no driver load.  The descriptor scan, the only part whose
cost grows with the number of processes, runs only for a reader that the
kernel reports held (or, after a failed open, for a device node).
"""

from __future__ import annotations

import os
import re
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from . import errors

__all__ = ["Holder", "Resource", "Usage", "KNOWN_HOLDERS", "reader_resources",
           "check_reader", "check_readers", "channel_open_error"]

#: Processes known to hold readers: name -> (what it is, how to free the reader).
KNOWN_HOLDERS: dict[str, tuple[str, str]] = {
    "pcscd": ("the PC/SC daemon, which opens every reader it knows",
              "stop it with `sudo systemctl stop pcscd.socket pcscd.service` "
              "(stopping pcscd.service alone lets the next PC/SC client start it again)"),
    "scdaemon": ("GnuPG's smart-card daemon",
                 "stop it with `gpgconf --kill scdaemon`"),
}

_GENERIC_ADVICE = ("If pcscd is running, it holds every reader it knows: "
                   + KNOWN_HOLDERS["pcscd"][1])

# vpcd: a DEVICENAME of /dev/null (optionally :PORT) makes it listen on
# PORT (default 35963) plus the slot, the LUN's low 16 bits.
_VPCD_DEFAULT_PORT = 35963
_USB_NAME = re.compile(r"^usb:[0-9a-fA-F]{4}/[0-9a-fA-F]{4}:libudev:(\d+):(/.*/(\d+)/(\d+))$")
_TCP_LISTEN = "0A"


@dataclass(frozen=True)
class Resource:
    """What a driver opens for a reader: ``kind`` is "usb" (a usbfs device
    node, with bus, address and interface number), "device" (any other
    device node, e.g. a serial port) or "tcp" (a port it listens on)."""

    kind: str
    path: str = ""
    port: int = 0
    bus: int = 0
    address: int = 0
    interface: int = -1

    def __str__(self) -> str:
        if self.kind == "tcp":
            return f"TCP port {self.port}"
        if self.kind == "usb":
            return f"USB device {self.path}"
        return f"device {self.path}"


@dataclass(frozen=True)
class Holder:
    """A process holding a reader's resource (``resource`` is its
    description, empty for a process named only as a likely holder)."""

    pid: int
    name: str
    resource: str = ""

    def __str__(self) -> str:
        own = ", this process" if self.pid == os.getpid() else ""
        return f"{self.name} (pid {self.pid}{own})"

    def as_dict(self) -> dict[str, object]:
        return {"pid": self.pid, "name": self.name, "resource": self.resource}


@dataclass(frozen=True)
class Usage:
    """The result of a lookup.

    ``held`` is True when the kernel shows the resource taken (a claimed
    USB interface, a listening socket), False when it shows it free, None
    when it cannot tell.  ``holders`` are the processes found holding it;
    ``suspects`` the known holders (:data:`KNOWN_HOLDERS`) that run while
    some processes' descriptors could not be read (``complete`` false).
    """

    resources: tuple[Resource, ...] = ()
    held: Optional[bool] = None
    holders: tuple[Holder, ...] = ()
    suspects: tuple[Holder, ...] = ()
    complete: bool = True

    @property
    def busy(self) -> bool:
        return self.held is True or bool(self.holders)

    def summary(self) -> str:
        """"held by pcscd (pid 812)", or "held by another process (probably
        pcscd, pid 812)" when the holder could not be seen."""
        if self.holders:
            return "held by " + ", ".join(str(h) for h in self.holders)
        if self.suspects:
            return ("held by another process (probably "
                    + ", ".join(f"{s.name}, pid {s.pid}" for s in self.suspects) + ")")
        return "held by another process"

    def taken(self) -> str:
        """What the kernel shows taken: "TCP port 35963", "its device"
        when the resources are not known."""
        return " and ".join(str(r) for r in self.resources) or "its device"

    def explanation(self) -> str:
        """Why the reader cannot be opened and how to free it."""
        if self.holders:
            found = "; ".join(f"{h} holds {h.resource}" for h in self.holders)
            return f"the reader is in use by another process: {found}. {_advice(self.holders)}"
        text = f"the reader is in use by another process ({self.taken()} is taken)"
        if not self.complete:
            text += (", and scardio cannot see which one: reading other users' "
                     "/proc/PID/fd needs root")
        if len(self.suspects) == 1:
            return (f"{text}. The likely holder is {self.suspects[0]}, which is "
                    f"running. {_advice(self.suspects)}")
        if self.suspects:
            return (f"{text}. The likely holders are {_names(self.suspects)}, which are "
                    f"running. {_advice(self.suspects)}")
        return f"{text}. {_GENERIC_ADVICE}"


def _names(processes: Sequence[Holder]) -> str:
    return ", ".join(str(p) for p in processes)


def _advice(processes: Sequence[Holder]) -> str:
    """How to free a reader these processes hold, one sentence each."""
    parts = []
    for p in processes:
        known = KNOWN_HOLDERS.get(p.name)
        if known is not None:
            parts.append(f"{p.name} is {known[0]}: {known[1]}.")
        elif p.pid == os.getpid():
            parts.append("This process already has it open: close it there first.")
        else:
            parts.append(f"Close {p.name} (or run `kill {p.pid}`) to free it.")
    return " ".join(dict.fromkeys(parts))


# --------------------------------------------------------------------------
# Device names


def reader_resources(library: str, device_name: str, lun: int = 0) -> tuple[Resource, ...]:
    """The resources a driver opens for a reader, from its pcsc-lite device
    name: ``usb:VVVV/PPPP:libudev:N:/dev/bus/usb/BBB/DDD`` (a USB node,
    interface N), ``/dev/null:PORT`` or vpcd's ``/dev/null`` (a TCP port),
    ``/dev/...[:extra]`` (a device node).  Unknown forms give ()."""
    m = _USB_NAME.match(device_name)
    if m:
        return (Resource("usb", path=m.group(2), bus=int(m.group(3)),
                         address=int(m.group(4)), interface=int(m.group(1))),)
    slot = lun & 0xFFFF
    head, sep, tail = device_name.partition(":")
    if head == "/dev/null":
        if sep:
            try:
                port = int(tail, 0)
            except ValueError:
                return ()
        elif "vpcd" in os.path.basename(library):
            port = _VPCD_DEFAULT_PORT
        else:
            return ()
        return (Resource("tcp", port=port + slot),) if 0 < port + slot < 65536 else ()
    if head.startswith("/dev/") and os.path.exists(head):
        return (Resource("device", path=head),)
    return ()


# --------------------------------------------------------------------------
# What the kernel publishes


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


# sock_diag (linux/sock_diag.h, linux/inet_diag.h): a dump of the listening
# TCP sockets costs ~0.1 ms, where reading /proc/net/tcp and tcp6 makes the
# kernel walk every socket hash bucket (~5 ms here, even with no sockets).
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x301
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN_BIT = 1 << 10
_NLMSG_HEADER = struct.Struct("=IHHII")
_DIAG_REQUEST = struct.Struct("=BBBBI48s")  # inet_diag_req_v2
_DIAG_SPORT = struct.Struct(">H")  # inet_diag_msg.id.idiag_sport, at offset 4
_DIAG_INODE = struct.Struct("=I")  # inet_diag_msg.idiag_inode, at offset 68
_DIAG_MSG_SIZE = 72


def _sock_diag_listeners() -> Optional[dict[int, set[int]]]:
    """Listening TCP ports -> socket inodes, from the kernel's sock_diag
    netlink interface; None when it is not available."""
    family = getattr(socket, "AF_NETLINK", None)
    if family is None:
        return None
    found: dict[int, set[int]] = {}
    try:
        with socket.socket(family, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as s:
            s.settimeout(1.0)
            for inet in (socket.AF_INET, socket.AF_INET6):
                request = _DIAG_REQUEST.pack(inet, socket.IPPROTO_TCP, 0, 0,
                                             _TCP_LISTEN_BIT, b"")
                s.send(_NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(request),
                                          _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0)
                       + request)
                done = False
                while not done:
                    data = s.recv(65536)
                    if not data:
                        return None
                    offset = 0
                    while offset + _NLMSG_HEADER.size <= len(data):
                        length, kind = _NLMSG_HEADER.unpack_from(data, offset)[:2]
                        if kind == _NLMSG_ERROR or length < _NLMSG_HEADER.size \
                                or offset + length > len(data):
                            return None
                        if kind == _NLMSG_DONE:
                            done = True
                            break
                        body = offset + _NLMSG_HEADER.size
                        if length - _NLMSG_HEADER.size >= _DIAG_MSG_SIZE:
                            port = _DIAG_SPORT.unpack_from(data, body + 4)[0]
                            inode = _DIAG_INODE.unpack_from(data, body + 68)[0]
                            found.setdefault(port, set()).add(inode)
                        offset += (length + 3) & ~3
    except OSError:
        return None
    return found


def _tcp_listeners(proc_root: str) -> Optional[dict[int, set[int]]]:
    """Listening TCP ports -> socket inodes: from sock_diag for the real
    /proc, else (or when it fails) from /proc/net/tcp{,6}; None when
    neither can be read."""
    if proc_root == "/proc":
        found_by_diag = _sock_diag_listeners()
        if found_by_diag is not None:
            return found_by_diag
    found: dict[int, set[int]] = {}
    readable = False
    for table in ("tcp", "tcp6"):
        text = _read(os.path.join(proc_root, "net", table))
        if text is None:
            continue
        readable = True
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            try:
                port = int(fields[1].rpartition(":")[2], 16)
                inode = int(fields[9])
            except ValueError:
                continue
            found.setdefault(port, set()).add(inode)
    return found if readable else None


def _usb_claimed(sys_root: str, res: Resource) -> Optional[bool]:
    """Whether the reader's USB interface is bound to usbfs (claimed by a
    process); None when sysfs does not show the device or the interface."""
    devdir = os.path.join(sys_root, "bus", "usb", "devices")
    try:
        names = os.listdir(devdir)
    except OSError:
        return None
    for name in names:
        if ":" in name:
            continue
        path = os.path.join(devdir, name)
        bus, dev = _read(os.path.join(path, "busnum")), _read(os.path.join(path, "devnum"))
        if bus is None or dev is None or not bus.strip().isdigit() \
                or not dev.strip().isdigit():
            continue
        if (int(bus), int(dev)) != (res.bus, res.address):
            continue
        claimed: Optional[bool] = None
        for entry in names:
            if not entry.startswith(name + ":"):
                continue
            number = (_read(os.path.join(devdir, entry, "bInterfaceNumber")) or "").strip()
            try:
                if int(number, 16) != res.interface:
                    continue
            except ValueError:
                continue
            link = os.path.join(devdir, entry, "driver")
            try:
                claimed = os.path.basename(os.readlink(link)) == "usbfs"
            except OSError:
                claimed = False  # no driver bound: nobody has claimed it
        return claimed
    return None


def _processes(proc_root: str) -> list[tuple[int, str]]:
    """(pid, name) of every process, known holders first."""
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return []
    procs = []
    for entry in entries:
        if entry.isdigit():
            name = _read(os.path.join(proc_root, entry, "comm"))
            if name is not None:
                procs.append((int(entry), name.strip()))
    procs.sort(key=lambda p: (p[1] not in KNOWN_HOLDERS, p[0]))
    return procs


def _scan(proc_root: str, targets: dict[str, Resource],
          procs: Sequence[tuple[int, str]]) -> tuple[list[Holder], bool]:
    """The processes that have one of *targets* (fd link texts: device
    paths, ``socket:[INODE]``) open, stopping once each is found; and
    whether every process's descriptors could be read."""
    holders: list[Holder] = []
    left = set(targets)
    complete = True
    for pid, name in procs:
        if not left:
            break
        fddir = os.path.join(proc_root, str(pid), "fd")
        try:
            with os.scandir(fddir) as it:
                links = []
                for fd in it:
                    try:
                        links.append(os.readlink(fd.path))
                    except OSError:
                        continue
        except PermissionError:
            complete = False
            continue
        except OSError:
            continue  # the process has gone
        seen = set()
        for link in links:
            res = targets.get(link)
            if res is not None and link not in seen:
                seen.add(link)
                left.discard(link)
                holders.append(Holder(pid, name, str(res)))
    if left and not os.path.isdir(os.path.join(proc_root, "1")):
        complete = False  # /proc mounted with hidepid: other users' processes are hidden
    return holders, complete


# --------------------------------------------------------------------------
# Lookups


def check_readers(readers: Iterable[tuple[str, str, int]], *, scan_unknown: bool = False,
                  find_holders: bool = True, proc_root: str = "/proc",
                  sys_root: str = "/sys", platform: str = sys.platform) -> list[Usage]:
    """One :class:`Usage` per ``(library, device_name, lun)``, with one
    descriptor scan for all of them.  Holders are searched only for readers
    the kernel shows held, and with *scan_unknown* also for those it cannot
    tell about (device nodes other than USB); without *find_holders* not at
    all (only ``held``: the scan reads every process's name, about 20 µs
    each).  Nothing is looked up unless *platform* is Linux."""
    entries = [reader_resources(lib, name, lun) for lib, name, lun in readers]
    if not platform.startswith("linux"):
        return [Usage(res) for res in entries]
    listeners: Optional[dict[int, set[int]]] = None
    if any(r.kind == "tcp" for res in entries for r in res):
        listeners = _tcp_listeners(proc_root)
    held_list: list[Optional[bool]] = []
    targets_list: list[dict[str, Resource]] = []
    for res in entries:
        held: Optional[bool] = None
        targets: dict[str, Resource] = {}
        for r in res:
            if r.kind == "tcp":
                inodes = None if listeners is None else listeners.get(r.port, set())
                this = None if inodes is None else bool(inodes)
                targets.update((f"socket:[{i}]", r) for i in inodes or ())
            else:
                this = _usb_claimed(sys_root, r) if r.kind == "usb" else None
                if this or (this is None and scan_unknown):
                    targets[r.path] = r
                    targets[os.path.realpath(r.path)] = r
            held = this if held is None else held or bool(this)
        if held is False:
            targets = {}
        held_list.append(held)
        targets_list.append(targets)
    wanted = {k: v for t in targets_list for k, v in t.items()}
    found: list[Holder] = []
    complete = True
    procs: list[tuple[int, str]] = []
    if wanted and find_holders:
        procs = _processes(proc_root)
        found, complete = _scan(proc_root, wanted, procs)
    suspects = tuple(Holder(pid, name) for pid, name in procs if name in KNOWN_HOLDERS)
    usages = []
    for res, held, targets in zip(entries, held_list, targets_list):
        descriptions = {str(r) for r in targets.values()}
        mine = tuple(h for h in found if h.resource in descriptions)
        usages.append(Usage(res, held, mine,
                            suspects if targets and not mine and not complete else (),
                            complete if targets else True))
    return usages


def check_reader(library: str, device_name: str, lun: int = 0, *,
                 proc_root: str = "/proc", sys_root: str = "/sys",
                 platform: str = sys.platform) -> Usage:
    """:func:`check_readers` for one reader, looking for holders of any
    device node (what a failed open needs)."""
    return check_readers([(library, device_name, lun)], scan_unknown=True,
                         proc_root=proc_root, sys_root=sys_root, platform=platform)[0]


def channel_open_error(message: str, library: str, device_name: str, lun: int = 0, *,
                       proc_root: str = "/proc", sys_root: str = "/sys",
                       platform: str = sys.platform) -> errors.ScardioError:
    """The error for a driver that could not open a reader's channel
    (*message* says so): :class:`~scardio.errors.ReaderInUseError` naming
    the holder and how to free the reader when another process holds it,
    else :class:`~scardio.errors.ChannelOpenError` with what was found."""
    usage = check_reader(library, device_name, lun, proc_root=proc_root,
                         sys_root=sys_root, platform=platform)
    node = next((r for r in usage.resources if r.kind in ("usb", "device")), None)
    node_usable = node is not None and os.path.exists(node.path) \
        and os.access(node.path, os.R_OK | os.W_OK)
    if usage.busy or (node is not None and node.kind == "usb" and node_usable
                      and usage.held is None and not usage.complete):
        err = errors.ReaderInUseError(f"{message}: {usage.explanation()}")
        err.holders = usage.holders or usage.suspects
        return err
    hint = ""
    if node is not None and not os.path.exists(node.path):
        hint = (f": {node.path} does not exist (the reader was unplugged, or "
                "re-plugged at another address: list the readers again)")
    elif node is not None and not node_usable:
        hint = (f": no permission to open {node.path} (run as root, or give "
                "your user access to the reader with a udev rule)")
    elif usage.suspects:
        hint = (f": {_names(usage.suspects)} "
                f"{'is' if len(usage.suspects) == 1 else 'are'} running and may hold it. "
                + _advice(usage.suspects))
    return errors.error_for_status(errors.ChannelOpenError.status, message + hint)
