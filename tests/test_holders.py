"""Who holds a reader (scardio.holders): the /proc and /sys parsing against
fake trees made in tmp (no root needed), the typed errors built from it,
and ``list`` / ``info`` through the CLI on a port this test process holds.
The same situation with pcscd as the holder is tests/test_reader_in_use.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scardio import errors, holders
from scardio.discovery import list_readers

from conftest import VPCD_LIBRARY, free_port

TCP_HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when "
              "retrnsmt   uid  timeout inode\n")
TCP6_HEADER = ("  sl  local_address                         remote_address                  "
               "      st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")


def tcp_line(n: int, port: int, state: str, inode: int) -> str:
    return (f"   {n}: 00000000:{port:04X} 00000000:0000 {state} 00000000:00000000 "
            f"00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n")


def tcp6_line(n: int, port: int, state: str, inode: int) -> str:
    return (f"   {n}: 00000000000000000000000000000000:{port:04X} "
            f"00000000000000000000000000000000:0000 {state} 00000000:00000000 "
            f"00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n")


class FakeProc:
    """A /proc tree: processes with a comm and fd links, and TCP tables."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "net").mkdir(parents=True)
        (root / "net" / "tcp").write_text(TCP_HEADER)
        (root / "net" / "tcp6").write_text(TCP6_HEADER)
        self.process(1, "systemd", [])

    def process(self, pid: int, name: str, links: list[str]) -> None:
        d = self.root / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "comm").write_text(name + "\n")
        for fd, target in enumerate(links):
            os.symlink(target, d / "fd" / str(fd))

    def tcp(self, text: str, v6: str = "") -> None:
        (self.root / "net" / "tcp").write_text(TCP_HEADER + text)
        (self.root / "net" / "tcp6").write_text(TCP6_HEADER + v6)


class FakeSys:
    """A /sys/bus/usb/devices tree with one device and its interfaces."""

    def __init__(self, root: Path) -> None:
        self.devices = root / "bus" / "usb" / "devices"
        self.devices.mkdir(parents=True)
        drivers = root / "bus" / "usb" / "drivers"
        for name in ("usbfs", "usbhid"):
            (drivers / name).mkdir(parents=True)

    def device(self, sysname: str, bus: int, address: int,
               interfaces: dict[int, str | None]) -> None:
        d = self.devices / sysname
        d.mkdir()
        (d / "busnum").write_text(f"{bus}\n")
        (d / "devnum").write_text(f"{address}\n")
        for number, driver in interfaces.items():
            i = self.devices / f"{sysname}:1.{number}"
            i.mkdir()
            (i / "bInterfaceNumber").write_text(f"{number:02x}\n")
            if driver:
                os.symlink(f"../../../bus/usb/drivers/{driver}", i / "driver")


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


@pytest.fixture
def fsys(tmp_path: Path) -> FakeSys:
    return FakeSys(tmp_path / "sys")


def check(proc: FakeProc, fsys: FakeSys, *readers: tuple[str, str, int],
          scan_unknown: bool = False) -> list[holders.Usage]:
    return holders.check_readers(list(readers), scan_unknown=scan_unknown,
                                 proc_root=str(proc.root), sys_root=str(fsys.devices.parents[2]),
                                 platform="linux")


def deny_fds_of(monkeypatch: pytest.MonkeyPatch, proc: FakeProc, *pids: int) -> None:
    """Make /proc/PID/fd unreadable for *pids*, as for another user's processes."""
    real_scandir = os.scandir
    denied = [str(proc.root / str(pid)) + os.sep for pid in pids]

    def scandir(path: str):  # type: ignore[no-untyped-def]
        if any(str(path).startswith(d) for d in denied):
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)


VPCD = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
USB_NAME = "usb:072f/90cc:libudev:0:/dev/bus/usb/001/004"


# ---- device names ----------------------------------------------------------

def test_resources_from_device_names(tmp_path: Path) -> None:
    R = holders.Resource
    assert holders.reader_resources("libccid.so", USB_NAME) == (
        R("usb", path="/dev/bus/usb/001/004", bus=1, address=4, interface=0),)
    assert holders.reader_resources("libccid.so", "usb:072f/90cc:libudev:2:/dev/bus/usb/003/117") \
        == (R("usb", path="/dev/bus/usb/003/117", bus=3, address=117, interface=2),)
    # vpcd: the port in the name, or 35963; plus the slot (the LUN's low 16 bits)
    assert holders.reader_resources(VPCD, "/dev/null:0x8C7B") == (R("tcp", port=35963),)
    assert holders.reader_resources(VPCD, "/dev/null:40000", 0x10001) == (R("tcp", port=40001),)
    assert holders.reader_resources(VPCD, "/dev/null", 1) == (R("tcp", port=35964),)
    assert holders.reader_resources("other.so", "/dev/null") == ()
    assert holders.reader_resources(VPCD, "/dev/null:nonsense") == ()
    assert holders.reader_resources(VPCD, "/dev/null:65535", 1) == ()
    # a serial reader: the device node, whatever follows the colon
    assert holders.reader_resources("libccidtwin.so", "/dev/null:GemPCPinPad") == ()
    assert holders.reader_resources("libccidtwin.so", "/dev/tty:GemPCPinPad") == (
        R("device", path="/dev/tty"),)
    assert holders.reader_resources("x.so", "/dev/no-such-node") == ()
    assert holders.reader_resources("sim.so", "sim:0") == ()
    assert holders.reader_resources("x.so", "") == ()
    assert str(R("tcp", port=35963)) == "TCP port 35963"
    assert str(R("usb", path="/dev/bus/usb/001/004")) == "USB device /dev/bus/usb/001/004"


# ---- TCP ports ---------------------------------------------------------------

def test_listening_port_is_held_by_the_process_with_the_socket(proc: FakeProc,
                                                               fsys: FakeSys) -> None:
    proc.tcp(tcp_line(0, 35963, "0A", 18265) + tcp_line(1, 35964, "0A", 18266)
             + tcp_line(2, 35963, "01", 0),  # an accepted connection: not the listener
             tcp6_line(0, 35963, "0A", 18300))
    proc.process(420, "bash", ["/dev/pts/0", "socket:[999]"])
    proc.process(812, "pcscd", ["/dev/null", "socket:[18266]", "socket:[18265]"])
    proc.process(900, "python3", ["socket:[18300]"])
    usage, = check(proc, fsys, (VPCD, "/dev/null:0x8C7B", 0))
    assert usage.busy and usage.held is True and usage.complete
    # the IPv4 and the IPv6 listeners are both found
    assert {(h.pid, h.name, h.resource) for h in usage.holders} == {
        (812, "pcscd", "TCP port 35963"), (900, "python3", "TCP port 35963")}
    assert usage.summary().startswith("held by ")
    assert "pcscd (pid 812)" in usage.summary()
    text = usage.explanation()
    assert "pcscd (pid 812) holds TCP port 35963" in text
    assert "systemctl stop pcscd.socket pcscd.service" in text
    assert "kill 900" in text


def test_free_port_is_not_busy_and_costs_no_scan(proc: FakeProc, fsys: FakeSys,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    proc.tcp(tcp_line(0, 35964, "0A", 18266) + tcp_line(1, 35963, "06", 0))  # TIME_WAIT
    proc.process(812, "pcscd", ["socket:[18266]"])
    scanned = []
    monkeypatch.setattr(holders, "_processes",
                        lambda root: scanned.append(root) or [])  # type: ignore[func-returns-value]
    usage, = check(proc, fsys, (VPCD, "/dev/null:0x8C7B", 0))
    assert not usage.busy and usage.held is False and usage.holders == ()
    assert scanned == []


def test_held_without_finding_holders_reads_no_process(proc: FakeProc, fsys: FakeSys,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # what backend="auto" asks before it opens: is the port taken, not by whom
    proc.tcp(tcp_line(0, 35963, "0A", 18265))
    proc.process(812, "pcscd", ["socket:[18265]"])
    scanned = []
    monkeypatch.setattr(holders, "_processes",
                        lambda root: scanned.append(root) or [])  # type: ignore[func-returns-value]
    usage, = holders.check_readers([(VPCD, "/dev/null:0x8C7B", 0)], find_holders=False,
                                   proc_root=str(proc.root),
                                   sys_root=str(fsys.devices.parents[2]), platform="linux")
    assert usage.busy and usage.held is True and usage.holders == usage.suspects == ()
    assert [str(r) for r in usage.resources] == ["TCP port 35963"]
    assert scanned == []
    usage, = check(proc, fsys, (VPCD, "/dev/null:0x8C7B", 0))
    assert scanned == [str(proc.root)]  # the default still finds them


def test_unreadable_tcp_tables_mean_unknown(proc: FakeProc, fsys: FakeSys) -> None:
    (proc.root / "net" / "tcp").unlink()
    (proc.root / "net" / "tcp6").unlink()
    usage, = check(proc, fsys, (VPCD, "/dev/null:0x8C7B", 0))
    assert usage.held is None and not usage.busy


def test_holder_not_visible_names_the_running_pcscd(proc: FakeProc, fsys: FakeSys,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """As a user other than pcscd's (root), /proc/PID/fd cannot be read: the
    reader is still busy, and pcscd is the likely holder."""
    proc.tcp(tcp_line(0, 35963, "0A", 18265))
    proc.process(812, "pcscd", ["socket:[18265]"])
    proc.process(900, "bash", ["/dev/pts/0"])
    deny_fds_of(monkeypatch, proc, 812)
    usage, = check(proc, fsys, (VPCD, "/dev/null:0x8C7B", 0))
    assert usage.busy and usage.holders == () and not usage.complete
    assert [(s.pid, s.name) for s in usage.suspects] == [(812, "pcscd")]
    assert usage.summary() == "held by another process (probably pcscd, pid 812)"
    text = usage.explanation()
    assert "needs root" in text and "pcscd (pid 812)" in text
    assert "systemctl stop pcscd.socket pcscd.service" in text


def test_hidden_processes_make_the_scan_incomplete(proc: FakeProc, fsys: FakeSys) -> None:
    """/proc mounted with hidepid: pid 1 is not even listed."""
    proc.tcp(tcp_line(0, 35963, "0A", 18265))
    for entry in (proc.root / "1" / "fd").iterdir():
        entry.unlink()
    (proc.root / "1" / "fd").rmdir()
    (proc.root / "1" / "comm").unlink()
    (proc.root / "1").rmdir()
    usage, = check(proc, fsys, (VPCD, "/dev/null:0x8C7B", 0))
    assert usage.busy and not usage.complete and usage.suspects == ()
    text = usage.explanation()
    assert "needs root" in text and "If pcscd is running" in text
    assert "systemctl stop pcscd.socket pcscd.service" in text


# ---- USB ---------------------------------------------------------------------

def test_claimed_usb_interface_is_held_by_the_process_with_the_node(proc: FakeProc,
                                                                    fsys: FakeSys) -> None:
    fsys.device("1-1", 1, 2, {0: "usbhid"})
    fsys.device("1-2", 1, 4, {0: "usbfs", 1: None})
    proc.process(300, "pcscd", ["/dev/bus/usb/001/004"])
    usage, = check(proc, fsys, ("libccid.so", USB_NAME, 0))
    assert usage.held is True
    assert [(h.pid, h.name, h.resource) for h in usage.holders] == [
        (300, "pcscd", "USB device /dev/bus/usb/001/004")]
    # interface 1 of the same device is not claimed
    usage, = check(proc, fsys, ("libccid.so", USB_NAME.replace(":0:", ":1:"), 0))
    assert usage.held is False and not usage.busy and usage.holders == ()


def test_usb_interface_bound_to_a_kernel_driver_is_not_held(proc: FakeProc,
                                                            fsys: FakeSys) -> None:
    fsys.device("1-2", 1, 4, {0: "usbhid"})
    proc.process(300, "pcscd", ["/dev/bus/usb/001/004"])
    usage, = check(proc, fsys, ("libccid.so", USB_NAME, 0))
    assert usage.held is False and not usage.busy


def test_usb_device_not_in_sysfs_is_unknown(proc: FakeProc, fsys: FakeSys) -> None:
    fsys.device("1-2", 1, 5, {0: "usbfs"})
    usage, = check(proc, fsys, ("libccid.so", USB_NAME, 0))
    assert usage.held is None and not usage.busy


def test_one_scan_serves_many_readers(proc: FakeProc, fsys: FakeSys,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fsys.device("1-2", 1, 4, {0: "usbfs"})
    proc.tcp(tcp_line(0, 35963, "0A", 18265))
    proc.process(300, "pcscd", ["/dev/bus/usb/001/004", "socket:[18265]"])
    calls = []
    real = holders._processes
    monkeypatch.setattr(holders, "_processes", lambda root: calls.append(1) or real(root))
    usb, vpcd, sim, free = check(proc, fsys, ("libccid.so", USB_NAME, 0),
                                 (VPCD, "/dev/null:0x8C7B", 0), ("sim.so", "sim:0", 0),
                                 (VPCD, "/dev/null:0x8C7B", 1))
    assert calls == [1]
    assert [h.resource for h in usb.holders] == ["USB device /dev/bus/usb/001/004"]
    assert [h.resource for h in vpcd.holders] == ["TCP port 35963"]
    assert not sim.busy and not free.busy and free.held is False


def test_other_platforms_look_nothing_up(proc: FakeProc, fsys: FakeSys) -> None:
    proc.tcp(tcp_line(0, 35963, "0A", 18265))
    proc.process(812, "pcscd", ["socket:[18265]"])
    for platform in ("darwin", "win32"):
        usage, = holders.check_readers([(VPCD, "/dev/null:0x8C7B", 0)],
                                       proc_root=str(proc.root), platform=platform)
        assert usage.held is None and not usage.busy and usage.holders == ()


# ---- the errors of a failed open ----------------------------------------------

MESSAGE = 'driver x.so could not open channel "{}" (LUN 0x0): IFD code 612'


def test_open_failure_on_a_held_port_is_reader_in_use(proc: FakeProc, fsys: FakeSys) -> None:
    proc.tcp(tcp_line(0, 35963, "0A", 18265))
    proc.process(812, "pcscd", ["socket:[18265]"])
    err = holders.channel_open_error(MESSAGE.format("/dev/null:0x8C7B"), VPCD,
                                     "/dev/null:0x8C7B", 0, proc_root=str(proc.root),
                                     sys_root=str(fsys.devices.parents[2]), platform="linux")
    assert type(err) is errors.ReaderInUseError
    assert isinstance(err, errors.ChannelOpenError) and isinstance(err, errors.DeviceBusyError)
    assert [(h.pid, h.name) for h in err.holders] == [(812, "pcscd")]
    assert str(err).startswith(MESSAGE.format("/dev/null:0x8C7B") + ": the reader is in use")
    assert "systemctl stop pcscd.socket pcscd.service" in str(err)
    assert err.status_name == "SHARING_VIOLATION"


def test_open_failure_on_a_free_port_stays_a_channel_error(proc: FakeProc,
                                                           fsys: FakeSys) -> None:
    err = holders.channel_open_error(MESSAGE.format("/dev/null:0x8C7B"), VPCD,
                                     "/dev/null:0x8C7B", 0, proc_root=str(proc.root),
                                     platform="linux")
    assert type(err) is errors.ChannelOpenError
    assert str(err) == MESSAGE.format("/dev/null:0x8C7B") + " [NO_SUCH_DEVICE]"


def test_open_failure_on_usb(proc: FakeProc, fsys: FakeSys, tmp_path: Path) -> None:
    node = tmp_path / "dev" / "bus" / "usb" / "001" / "004"
    name = f"usb:072f/90cc:libudev:0:{node}"
    kw = dict(proc_root=str(proc.root), sys_root=str(fsys.devices.parents[2]),
              platform="linux")
    # the node is gone: unplugged, not in use
    err = holders.channel_open_error(MESSAGE.format(name), "libccid.so", name, 0, **kw)
    assert type(err) is errors.ChannelOpenError and f"{node} does not exist" in str(err)
    node.parent.mkdir(parents=True)
    node.write_bytes(b"")
    # claimed through usbfs by pcscd
    fsys.device("1-2", 1, 4, {0: "usbfs"})
    proc.process(300, "pcscd", [str(node)])
    err = holders.channel_open_error(MESSAGE.format(name), "libccid.so", name, 0, **kw)
    assert type(err) is errors.ReaderInUseError
    assert f"pcscd (pid 300) holds USB device {node}" in str(err)


def test_open_failure_on_an_unknown_usb_device_names_a_running_pcscd(
        proc: FakeProc, fsys: FakeSys, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No sysfs entry and pcscd's descriptors unreadable: in use, probably
    by pcscd (what commit 7691c38 said for every USB reader)."""
    node = tmp_path / "001" / "004"
    node.parent.mkdir()
    node.write_bytes(b"")
    name = f"usb:072f/90cc:libudev:0:{node}"
    proc.process(300, "pcscd", [str(node)])
    deny_fds_of(monkeypatch, proc, 300)
    err = holders.channel_open_error(MESSAGE.format(name), "libccid.so", name, 0,
                                     proc_root=str(proc.root),
                                     sys_root=str(fsys.devices.parents[2]), platform="linux")
    assert type(err) is errors.ReaderInUseError
    assert "likely holder is pcscd (pid 300)" in str(err)
    assert [h.pid for h in err.holders] == [300]


def test_open_failure_on_a_serial_node_names_running_pcscds(
        proc: FakeProc, fsys: FakeSys, monkeypatch: pytest.MonkeyPatch) -> None:
    """A serial reader's node proves nothing by itself (the reader may just
    be unplugged from the port): a channel error, naming the pcscds that run
    where their descriptors cannot be read."""
    proc.process(300, "pcscd", [])
    proc.process(301, "pcscd", [])
    deny_fds_of(monkeypatch, proc, 300, 301)
    err = holders.channel_open_error(MESSAGE.format("/dev/zero"), "libgempc.so",
                                     "/dev/zero", 0, proc_root=str(proc.root),
                                     sys_root=str(fsys.devices.parents[2]), platform="linux")
    assert type(err) is errors.ChannelOpenError
    assert "pcscd (pid 300), pcscd (pid 301) are running and may hold it" in str(err)
    assert str(err).count("systemctl stop pcscd.socket pcscd.service") == 1
    # and the same node held by a process that can be seen is in use
    proc.process(302, "gpg-agent", ["/dev/zero"])
    err = holders.channel_open_error(MESSAGE.format("/dev/zero"), "libgempc.so",
                                     "/dev/zero", 0, proc_root=str(proc.root),
                                     sys_root=str(fsys.devices.parents[2]), platform="linux")
    assert type(err) is errors.ReaderInUseError
    assert "gpg-agent (pid 302) holds device /dev/zero" in str(err)
    assert "kill 302" in str(err)


def test_open_failure_without_access_to_the_node_says_so(
        proc: FakeProc, fsys: FakeSys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = tmp_path / "001" / "004"
    node.parent.mkdir()
    node.write_bytes(b"")
    name = f"usb:072f/90cc:libudev:0:{node}"
    monkeypatch.setattr(os, "access", lambda path, mode: path != str(node))
    err = holders.channel_open_error(MESSAGE.format(name), "libccid.so", name, 0,
                                     proc_root=str(proc.root),
                                     sys_root=str(fsys.devices.parents[2]), platform="linux")
    assert type(err) is errors.ChannelOpenError
    assert f"no permission to open {node}" in str(err) and "udev rule" in str(err)


# ---- this process holding a vpcd port: the API, the listing and the CLI -----

@pytest.fixture
def held_port():
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", port))
        s.listen(1)
        yield port


def write_conf(path: Path, port: int, library: str) -> Path:
    path.write_text(f'FRIENDLYNAME "Held Reader"\nDEVICENAME /dev/null:{port:#x}\n'
                    f"LIBPATH {library}\n")
    return path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc lookups are Linux only")
def test_list_readers_marks_a_held_reader_busy(tmp_path: Path, held_port: int) -> None:
    lib = tmp_path / "libfake.so"
    lib.write_bytes(b"")
    conf = write_conf(tmp_path / "reader.conf", held_port, str(lib))
    free = write_conf(tmp_path / "free.conf", free_port(), str(lib))
    r, = list_readers(reader_conf_dirs=[conf], check_busy=True)
    assert r.busy and r.extra["busy"] is True
    comm = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert r.extra["holders"] == [{"pid": os.getpid(), "name": comm,
                                   "resource": f"TCP port {held_port}"}]
    assert f"pid {os.getpid()}, this process" in str(r.extra["busy_summary"])
    r, = list_readers(reader_conf_dirs=[free], check_busy=True)
    assert not r.busy and r.extra["busy"] is False
    # not asked: not looked up
    r, = list_readers(reader_conf_dirs=[conf])
    assert "busy" not in r.extra and not r.busy


@pytest.mark.vpcd
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc lookups are Linux only")
def test_cli_reports_a_held_reader(tmp_path: Path, held_port: int) -> None:
    if not os.path.exists(VPCD_LIBRARY):
        pytest.skip(f"vsmartcard-vpcd is not installed ({VPCD_LIBRARY})")
    conf = write_conf(tmp_path / "reader.conf", held_port, VPCD_LIBRARY)

    def scardio(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "scardio", "--reader-conf", str(conf),
                               *args], capture_output=True, text=True, timeout=60)

    me = f"pid {os.getpid()}"
    info = scardio("info", "0")
    assert info.returncode == 5, info.stderr
    assert "scardio: reader in use:" in info.stderr
    assert f"{me}) holds TCP port {held_port}" in info.stderr
    listing = scardio("list")
    assert listing.returncode == 0, listing.stderr
    assert "[busy: held by " in listing.stdout and me in listing.stdout
    doc = json.loads(scardio("list", "--json").stdout)
    assert doc[0]["busy"] is True and doc[0]["holders"][0]["pid"] == os.getpid()
    err = json.loads(scardio("--json", "info", "0").stderr.splitlines()[-1])
    assert err["type"] == "ReaderInUseError" and err["exit_code"] == 5
    assert "5 reader in use" in " ".join(scardio("--help").stdout.split())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux interfaces")
def test_sock_diag_and_proc_net_tcp_agree(held_port: int) -> None:
    """The fast path (sock_diag netlink) and the /proc/net/tcp{,6} tables
    name the same listening socket (IPv4 and IPv6)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
        s6.bind(("::1", 0))
        s6.listen(1)
        port6 = s6.getsockname()[1]
        fast = holders._sock_diag_listeners()
        if fast is None:
            pytest.skip("sock_diag netlink is not available here")
        # "/proc/" is the same tree but not the literal "/proc": the file parser
        slow = holders._tcp_listeners("/proc/")
        assert slow is not None
        for port in (held_port, port6):
            assert fast[port] == slow[port] and len(fast[port]) == 1
        assert holders._tcp_listeners("/proc")[held_port] == fast[held_port]  # type: ignore[index]


@pytest.mark.vpcd
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc lookups are Linux only")
@pytest.mark.parametrize("command", [["monitor"], ["scan"]])
def test_watching_every_reader_skips_a_held_one(tmp_path: Path, held_port: int,
                                                command: list[str]) -> None:
    """monitor/scan with no reader named watch the readers they can open and
    say which held one they skipped; naming the held reader is an error."""
    if not os.path.exists(VPCD_LIBRARY):
        pytest.skip(f"vsmartcard-vpcd is not installed ({VPCD_LIBRARY})")
    conf = write_conf(tmp_path / "reader.conf", held_port, VPCD_LIBRARY)
    held_only = [sys.executable, "-m", "scardio", "--reader-conf", str(conf), "--json"]
    base = held_only + ["--sim", "1", "--insert"]
    every = subprocess.run(base + command + ["--count", "1", "--timeout", "20"],
                           capture_output=True, text=True, timeout=60)
    assert every.returncode == 0, every.stderr
    notes = [json.loads(line) for line in every.stderr.splitlines() if line.startswith("{")]
    assert [(n["skipped"], n["reason"]) for n in notes] == [("Held Reader", "reader in use")]
    assert f"TCP port {held_port}" in notes[0]["message"]
    text = subprocess.run([a for a in base if a != "--json"] + command
                          + ["--count", "1", "--timeout", "20"],
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 0, text.stderr
    assert "scardio: skipping 'Held Reader': " in text.stderr
    events = [json.loads(line) for line in every.stdout.splitlines()]
    assert [e["reader"] for e in events] == ["scardio Simulated Reader 0"]
    named = subprocess.run(held_only + ["--sim", "1"] + command + ["Held Reader", "--timeout", "1"],
                           capture_output=True, text=True, timeout=60)
    assert named.returncode == 5, named.stderr
    assert json.loads(named.stderr.splitlines()[-1])["type"] == "ReaderInUseError"
    only_held = subprocess.run(held_only + command + ["--timeout", "1"],
                               capture_output=True, text=True, timeout=60)
    assert only_held.returncode == 5, only_held.stderr
    assert "every reader is in use" in only_held.stderr
