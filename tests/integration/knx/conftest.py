"""Fixtures for KNX tests: knxd (Debian) with a dummy bus inside a private network namespace.

knxd's KNXnet/IP server joins the multicast group 224.0.23.12 on the
default-route interface whatever it is told (../shared/PEERS.md §2), so it
must never run in the machine's namespace.  ``knx_ns`` gives each test a
thread that moved itself into a fresh network namespace (``unshare(CLONE_NEWNET)``
acts on the calling thread only) and runs its own asyncio loop there: every
socket the code under test opens from that loop, every executor thread the
loop starts and every process started from it (knxd, knxtool, the gateway
daemon) live in that namespace, whose only interface is ``lo`` with a
multicast route.  The rest of the test session is not affected.

- ``knx_ns.run(coro_fn, *args, timeout=...)``: run ``await coro_fn(*args)`` on the
  namespace's loop and return its result (exceptions propagate).
- ``knx_ns.call(fn, *args)``: run a plain function on that thread (``Popen`` there).
- ``knxd_factory(routing=True)``: start knxd (tunnelling + routing on UDP 3671,
  knxd protocol on a unix socket) in the namespace; stopped at the end.
- ``Knxd.listen()``: a ``knxtool groupsocketlisten`` collecting ``Line(kind, source,
  group, data, at)``; ``Knxd.groupswrite(ga, value)`` / ``groupwrite(ga, *bytes)`` /
  ``groupread(ga)``.  ``listen()`` returns once the listener saw a probe written to
  ``31/7/<n>`` (knxtool connects in its own time).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
KNX_PORT = 3671

_NS_SETUP = (
    ("ip", "link", "set", "lo", "up"),
    ("ip", "link", "set", "lo", "multicast", "on"),
    # the source address is required: without it knxd's ets_router fails at start
    ("ip", "route", "add", "224.0.0.0/4", "dev", "lo", "src", "127.0.0.1"),
)


def _missing() -> str | None:
    for tool in ("knxd", "knxtool", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install knxd knxd-tools iproute2)"
    if os.geteuid() != 0:
        return "a private network namespace needs root (CAP_SYS_ADMIN)"
    return None


class NetnsThread:
    """A thread in its own network namespace, running an asyncio loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="knx-netns", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
            for cmd in _NS_SETUP:
                subprocess.run(cmd, check=True, capture_output=True)
        except BaseException as exc:  # noqa: BLE001 - handed to the constructor
            self._error = exc
            self._ready.set()
            return
        asyncio.set_event_loop(self.loop)
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def run(self, coro_fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = 120) -> T:
        async def wrapper() -> T:
            return await coro_fn(*args)

        fut = asyncio.run_coroutine_threadsafe(wrapper(), self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise AssertionError(f"scenario did not finish within {timeout} s") from None

    def call(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        if threading.current_thread() is self._thread:
            return fn(*args, **kw)  # already in the namespace (a scenario's own call)

        async def wrapper() -> T:
            return fn(*args, **kw)

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(30)

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)


@dataclass(frozen=True)
class Line:
    kind: str  # "Write" | "Read" | "Response"
    source: str
    group: str
    data: bytes
    at: float  # time.monotonic() when the line was read


_LINE = re.compile(r"^(Write|Read|Response) from (\S+) to (\S+?):?(?: ((?:[0-9A-Fa-f]{2} ?)*))?\s*$")


class Listener:
    """``knxtool groupsocketlisten``: every group telegram knxd routes, as ``Line``s."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[Line] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for text in self.proc.stdout:
            at = time.monotonic()
            m = _LINE.match(text.strip())
            with self._cond:
                self.raw.append(text.rstrip("\n"))
                if m is not None:
                    data = bytes.fromhex(m.group(4) or "")
                    self.lines.append(Line(m.group(1), m.group(2), m.group(3), data, at))
                self._cond.notify_all()

    def wait_for(self, pred: Callable[[Line], bool], timeout: float = 10, *,
                 after: int = 0) -> Line:
        """The first line (from index ``after``) matching ``pred``; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[after:]:
                    if pred(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching telegram within {timeout} s; saw {self.raw!r}")
                self._cond.wait(left)

    async def await_for(self, pred: Callable[[Line], bool], timeout: float = 10, *,
                        after: int = 0) -> Line:
        return await asyncio.to_thread(self.wait_for, pred, timeout, after=after)

    def writes(self, group: str) -> list[Line]:
        with self._cond:
            return [ln for ln in self.lines if ln.kind == "Write" and ln.group == group]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._thread.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Knxd:
    """One knxd with a dummy bus; its processes are started on the namespace thread."""

    def __init__(self, ns: NetnsThread, workdir: Path, *, routing: bool = True) -> None:
        self.ns = ns
        self.sock = workdir / "knxd.sock"
        self.log_path = workdir / "knxd.log"
        self.routing = routing
        self.proc: subprocess.Popen[bytes] | None = None
        self.listeners: list[Listener] = []

    @property
    def url(self) -> str:
        return f"local:{self.sock}"

    def start(self) -> Knxd:
        server = ["-D", "-T", "-R", "-S"] if self.routing else ["-D", "-T", "-S"]
        args = ["knxd", "-e", "0.0.1", "-E", "0.0.2:8", "-u", str(self.sock), *server, "-b", "dummy:"]
        if self.sock.exists():
            self.sock.unlink()
        log = self.log_path.open("ab")
        try:
            self.proc = self.ns.call(subprocess.Popen, args, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + 10
        while not self.sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"knxd did not start: {self.log_path.read_text(errors='replace')}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        for listener in self.listeners:
            listener.close()
        self.listeners.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def listen(self) -> Listener:
        proc = self.ns.call(subprocess.Popen, ["knxtool", "groupsocketlisten", self.url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        listener = Listener(proc)
        self.listeners.append(listener)
        # knxtool connects to knxd in its own time: a probe it reports proves it listens
        probe = f"31/7/{len(self.listeners)}"
        deadline = time.monotonic() + 10
        while True:
            self.groupswrite(probe, 1)
            try:
                listener.wait_for(lambda ln: ln.group == probe, timeout=0.2)
                return listener
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def _tool(self, *args: str) -> str:
        res = self.ns.call(subprocess.run, ["knxtool", *args], capture_output=True, text=True,
                           timeout=10)
        if res.returncode != 0:
            raise AssertionError(f"knxtool {' '.join(args)} failed: {res.stdout}{res.stderr}")
        return res.stdout

    def groupswrite(self, group: str, value: int) -> None:
        """A DPT 1 (6-bit) GroupValueWrite."""
        self._tool("groupswrite", self.url, group, str(value))

    def groupwrite(self, group: str, *octets: int) -> None:
        """A GroupValueWrite with a data payload (``groupwrite url 1/2/3 0c 1a``)."""
        self._tool("groupwrite", self.url, group, *(f"{b:02x}" for b in octets))

    def groupread(self, group: str) -> None:
        """A GroupValueRead (the answer shows in a listener as ``Response``)."""
        self._tool("groupread", self.url, group)


@pytest.fixture
def knx_ns() -> Iterator[NetnsThread]:
    why = _missing()
    if why is not None:
        pytest.skip(why)
    ns = NetnsThread()
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def knxd_factory(knx_ns: NetnsThread, tmp_path: Path) -> Iterator[Callable[..., Knxd]]:
    started: list[Knxd] = []

    def factory(*, routing: bool = True) -> Knxd:
        d = Knxd(knx_ns, tmp_path, routing=routing).start()
        started.append(d)
        return d

    yield factory
    for d in started:
        d.stop()


# ------------------------------------------------------------------ keyring
def write_knxkeys(path: Path, password: str, *, tunnel: str | None = "1.1.5", host: str = "1.1.0",
                  user_id: int = 2, tunnel_password: str = "tunnel-secret",
                  backbone_key: bytes | None = None) -> Path:
    """Write an ETS-style ``.knxkeys`` file that xknx's loader accepts.

    ETS is the only producer of these files, so the test makes its own: the
    secrets are AES-128-CBC encrypted with the PBKDF2 hash of ``password`` and
    an IV from the ``Created`` attribute, and the signature is computed with
    xknx's own canonicalisation (``KeyringSAXContentHandler``), which is what
    its loader verifies.
    """
    import base64
    import xml.sax
    from io import BytesIO

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from xknx.secure.keyring import KeyringSAXContentHandler, hash_keyring_password
    from xknx.secure.util import sha256_hash

    created = "2026-11-22T10:00:00"
    key = hash_keyring_password(password.encode())
    iv = sha256_hash(created.encode())[:16]

    def enc(data: bytes) -> str:
        e = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        return base64.b64encode(e.update(data) + e.finalize()).decode()

    def enc_password(text: str) -> str:
        raw = os.urandom(8) + text.encode()
        pad = 16 - len(raw) % 16
        return enc(raw + bytes([pad]) * pad)

    children = []
    if backbone_key is not None:
        children.append(f'<Backbone MulticastAddress="224.0.23.12" Latency="1000" Key="{enc(backbone_key)}" />')
    if tunnel is not None:
        children.append(
            f'<Interface Type="Tunneling" Host="{host}" IndividualAddress="{tunnel}" UserID="{user_id}" '
            f'Password="{enc_password(tunnel_password)}" Authentication="{enc_password("auth-code")}" />')

    def document(signature: str) -> str:
        sig = f' Signature="{signature}"' if signature else ""
        return ('<?xml version="1.0" encoding="utf-8"?>\n'
                f'<Keyring Project="han-gateway test" CreatedBy="han-gateway tests" Created="{created}"'
                f'{sig} xmlns="http://knx.org/xml/keyring/1">'
                + "".join(children) + "</Keyring>\n")

    handler = KeyringSAXContentHandler(password)
    parser = xml.sax.make_parser()
    parser.setContentHandler(handler)
    parser.parse(BytesIO(document("").encode()))
    signature = base64.b64encode(sha256_hash(bytes(handler.output))[:16]).decode()
    path.write_text(document(signature), encoding="utf-8")
    return path


@pytest.fixture
def knxkeys() -> Callable[..., Path]:
    """``knxkeys(path, password, **kw)``: see :func:`write_knxkeys`."""
    return write_knxkeys
