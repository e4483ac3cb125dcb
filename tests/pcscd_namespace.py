"""pcscd in a private mount and network namespace, for the tests that run
it: ``unshare -mn``, loopback up and a tmpfs on /run/pcscd, so that neither
pcscd's fixed socket nor vpcd's fixed TCP ports can collide with another
pcscd, another test run or anything else on the machine.

Two ways in: :func:`run_child` runs a script inside a fresh namespace and
returns the JSON it reports (the script starts and stops pcscd with
:class:`Pcscd`, importing this module: the tests directory is on its
path); :func:`spawn` starts a long-lived process (pcscd itself) in one, and
:func:`in_network_of` runs a function in that process's network namespace
(to reach the ports of a driver pcscd loaded).  Stdlib only: the scripts
run under the system Python too."""

from __future__ import annotations

import ctypes
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import Any, Callable, Optional, Sequence, TypeVar, Union

HERE = os.path.dirname(os.path.abspath(__file__))

#: What a namespace child runs first: loopback and a private /run/pcscd.
SETUP = "ip link set lo up && mount -t tmpfs scardio-pcscd /run/pcscd"


def pcscd_path() -> Optional[str]:
    for cand in (shutil.which("pcscd"), "/usr/sbin/pcscd"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


#: Debian's own interpreter, where the system pyscard (python3-pyscard) lives.
SYSTEM_PYTHON = "/usr/bin/python3"


def system_pyscard() -> str:
    """The system interpreter when it has pyscard (the other PC/SC client
    of the scenarios that compare with it), else ""."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return ""
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import smartcard.scard"], capture_output=True,
                       timeout=60)
    return SYSTEM_PYTHON if r.returncode == 0 else ""


def unavailable() -> Optional[str]:
    """Why pcscd cannot run in a private namespace here (None: it can)."""
    if not sys.platform.startswith("linux"):
        return "pcscd in a private namespace needs Linux"
    if os.geteuid() != 0:
        return "needs root: unshare -mn and pcscd run as root"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if pcscd_path() is None:
        return "pcscd is not installed"
    os.makedirs("/run/pcscd", exist_ok=True)
    try:
        r = subprocess.run(["unshare", "-mn", "--propagation", "private", "sh", "-c", SETUP],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unshare -mn does not work here: {exc}"
    if r.returncode != 0:
        return f"unshare -mn does not work here: {r.stderr.strip() or f'exit {r.returncode}'}"
    return None


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = HERE + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def spawn(script: str, **popen: Any) -> "subprocess.Popen[Any]":
    """Start the shell command *script* in a fresh private namespace (its own
    session); the process's pid is the namespace's first process (``sh``,
    which may ``exec`` into the real one).  End it with :func:`kill`."""
    return subprocess.Popen(["unshare", "-mn", "--propagation", "private", "sh", "-c",
                             f"{SETUP} && {script}"], start_new_session=True,
                            env=popen.pop("env", None) or _child_env(), **popen)


def kill(proc: "subprocess.Popen[Any]", grace: float = 10.0) -> None:
    """End a :func:`spawn` process: SIGTERM, then SIGKILL to its whole
    session after *grace* seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(grace)


T = TypeVar("T")

_CLONE_NEWNET = 0x40000000


def in_network_of(pid: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a thread that has joined the network namespace of
    process *pid*: sockets it makes (and threads it starts) live there, and
    stay usable from any thread.  Needs root (setns)."""
    libc = ctypes.CDLL(None, use_errno=True)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            with open(f"/proc/{pid}/ns/net", "rb") as ns:
                if libc.setns(ns.fileno(), _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into the network of pid {pid}: "
                                       f"{os.strerror(err)}")
            outcome["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            outcome["error"] = exc
    # A thread of its own: setns changes the calling thread only, and this
    # one ends with the namespace it joined.
    th = threading.Thread(target=run, name=f"netns-{pid}", daemon=True)
    th.start()
    th.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def run_scenario_script(script: Union[str, "os.PathLike[str]"], *args: str,
                        timeout: float) -> dict[str, Any]:
    """Run the scenario script *script* (its arguments: a fresh work
    directory, then *args*) in a private namespace (:func:`run_child`): its
    report.  The work directory is removed afterwards."""
    work = tempfile.mkdtemp(prefix="scardio-scenarios-")
    try:
        return run_child([sys.executable, os.fspath(script), work, *args], timeout=timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sim_scenario_report(script: Union[str, "os.PathLike[str]"], *args: str, timeout: float,
                        also_needed: Optional[Callable[[], Optional[str]]] = None
                        ) -> dict[str, Any]:
    """For a test module's report fixture: skip (with the reason) unless
    pcscd can run in a private namespace, *also_needed* (a second
    ``unavailable``) has no objection and the simulated reader is built;
    then :func:`run_scenario_script` with the simulated reader's library
    first among its arguments."""
    import pytest

    from scardio.sim import SIM_LIBRARY
    why = unavailable() or (also_needed() if also_needed is not None else None)
    if why is not None:
        pytest.skip(why)
    if not os.path.exists(SIM_LIBRARY):
        pytest.skip("the simulated reader is not built")
    return run_scenario_script(script, SIM_LIBRARY, *args, timeout=timeout)


def scenario_result(report: dict[str, Any], name: str, *, missing: Optional[str] = None,
                    context: str = "") -> dict[str, Any]:
    """One scenario's result from a report, failing the test with its
    traceback (and *context*) when it failed; a scenario the script did not
    run skips the test with the reason *missing*."""
    import pytest

    if missing is not None and name not in report:
        pytest.skip(f"scenario {name} did not run ({missing})")
    got: dict[str, Any] = report[name]
    assert got["ok"], f"{got.get('error')}{context}"
    return got


def run_scenarios(scenarios: Any, names: Sequence[str]) -> dict[str, Any]:
    """Run each named method of *scenarios* (inside the namespace): its
    result, with "ok" and "seconds", or its traceback, which the test
    reports when it fails."""
    report: dict[str, Any] = {}
    for name in names:
        t = time.monotonic()
        try:
            report[name] = {"ok": True, **getattr(scenarios, name)()}
        except BaseException:  # reported to the test, which fails on it
            report[name] = {"ok": False, "error": traceback.format_exc()}
        report[name]["seconds"] = time.monotonic() - t
    return report


class Pcscd:
    """pcscd in the foreground on reader.conf *conf*, started by a script
    that runs inside the namespace (see :func:`run_child`).  Its output goes
    to *log* (a path; default: discarded); *args* are more pcscd options,
    *env* its environment (default: this process's)."""

    def __init__(self, conf: Union[str, "os.PathLike[str]"],
                 log: Optional[Union[str, "os.PathLike[str]"]] = None, *,
                 args: Sequence[str] = (), env: Optional[dict[str, str]] = None) -> None:
        path = pcscd_path()
        if path is None:
            raise RuntimeError("pcscd is not installed")
        log_file = open(log, "wb") if log is not None else None
        try:
            self.proc = subprocess.Popen(
                [path, "-f", *args, "-c", os.fspath(conf)], stderr=subprocess.STDOUT,
                stdout=log_file if log_file is not None else subprocess.DEVNULL, env=env)
        finally:
            if log_file is not None:
                log_file.close()
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> bool:
        """Stop pcscd (SIGTERM; SIGKILL after *grace* seconds); whether it
        was still running when asked, i.e. it did not die on its own."""
        was_alive = self.alive()
        if was_alive:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(grace)
        return was_alive


def run_child(argv: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run *argv* inside a fresh private namespace and return the JSON
    document its last line of output holds.  Raises AssertionError with the
    child's output when it fails or hangs (then the whole session, the
    child's pcscd included, is killed)."""
    script = f"{SETUP} && exec {shlex.join(argv)}"
    proc = subprocess.Popen(["unshare", "-mn", "--propagation", "private", "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=_child_env())
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # our own session: the child and its pcscd
        out, err = proc.communicate()
        raise AssertionError(f"the namespace child hung; stderr: {err[-2000:]}") from None
    assert proc.returncode == 0, f"the namespace child failed: {out[-1000:]} {err[-3000:]}"
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result
