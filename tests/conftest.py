"""Shared fixtures: real peers on loopback.

MQTT: Debian ``mosquitto`` started by the test session (see ../shared/PEERS.md §1):

- ``free_port()`` (fixture form: ``free_tcp_port``): a currently free TCP port
  on 127.0.0.1 (mosquitto's ``listener 0`` is a unix socket, not an ephemeral
  port, so we pick one).
- ``mosquitto``: a plain, anonymous broker shared by the session; the fixture
  restarts it after a test that stopped it.
- ``mosquitto_secure``: one broker with a password file, an ACL and two
  listeners, ``port`` (plain + auth) and ``tls_port`` (TLS + auth), CA and
  certificates made with ``cryptography``.
- ``mosquitto_factory(secure=False)``: a private broker for tests that stop and
  restart it (outage tests); stopped at the end of the session.
- ``mqtt_subscriber(broker, *topics, tls=False, auth=None)``: a ``Subscriber``
  collecting ``Message(topic, payload, retain, qos)``; ``await sub.wait_for(pred)``.
- ``abort_connections(port, keep=...)``: shut down this process's TCP
  connections to ``port`` without an MQTT DISCONNECT (the broker then sends
  the client's will), to simulate a dead network.

Every broker has ``start()``/``stop()`` (and ``pause()``/``resume()``/``kill()``
for SIGSTOP/SIGCONT/SIGKILL); ``start()`` after ``stop()`` or ``kill()`` reuses
the same ports, so clients reconnect to the same address.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import settings
from paho.mqtt.enums import CallbackAPIVersion

# CI runs a derandomised Hypothesis profile, so a red CI is reproducible and not
# a roll of the dice; developers' runs stay random and keep finding new cases.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


# ------------------------------------------------------------------- ports
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def free_tcp_port() -> int:
    """A free loopback TCP port (the fixture form of ``free_port()``)."""
    return free_port()


def _wait_tcp(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.01)
    return False


def _mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _mosquitto_passwd_binary() -> str | None:
    found = shutil.which("mosquitto_passwd")
    if found:
        return found
    for candidate in ("/usr/bin/mosquitto_passwd", "/usr/sbin/mosquitto_passwd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


# --------------------------------------------------------------------- PKI
@dataclass(frozen=True, slots=True, kw_only=True)
class Pki:
    ca_path: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def make_pki(directory: Path) -> Pki:
    """EC P-256 test CA, a server cert for 127.0.0.1/localhost and a client cert (CN gateway)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("han-gateway test CA"))
        .issuer_name(_name("han-gateway test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName] | None) -> tuple[
        x509.Certificate, ec.EllipticCurvePrivateKey
    ]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    server, server_key = leaf(
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    client, client_key = leaf("gateway", ExtendedKeyUsageOID.CLIENT_AUTH, None)
    pem = serialization.Encoding.PEM
    pki = Pki(
        ca_path=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
    pki.ca_path.write_bytes(ca.public_bytes(pem))
    pki.server_cert.write_bytes(server.public_bytes(pem))
    _write_key(server_key, pki.server_key)
    pki.client_cert.write_bytes(client.public_bytes(pem))
    _write_key(client_key, pki.client_key)
    return pki


# ------------------------------------------------------------------ broker
@dataclass(eq=False, kw_only=True)
class MosquittoBroker:
    """One mosquitto process; ``stop()``/``start()`` keep the same ports."""

    binary: str
    workdir: Path
    host: str = "127.0.0.1"
    port: int
    tls_port: int | None = None
    ca_path: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    username: str | None = None
    password: str | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str:
        assert self.tls_port is not None, "this broker has no TLS listener"
        return f"mqtts://{self.host}:{self.tls_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        for port in ports:
            if not _wait_tcp(port, deadline) or self._proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"mosquitto did not come up on port {port}:\n{tail}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing is answered."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """End the broker abruptly (SIGKILL, works while paused); ``start()`` brings it back."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        self.stop()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def enable_persistence(self) -> None:
        """Keep sessions and queued messages across stop()/start() (takes effect at start)."""
        text = self.config_path.read_text().replace("persistence false\n", "")
        if "persistence true" not in text:
            text = f"persistence true\npersistence_location {self.workdir}/\n" + text
        self.config_path.write_text(text)


_COMMON = """\
user root
per_listener_settings false
persistence false
max_queued_messages 100000
log_dest stdout
log_type error
log_type warning
log_type notice
log_type information
"""


def _plain_broker(binary: str, workdir: Path) -> MosquittoBroker:
    workdir.mkdir(parents=True, exist_ok=True)
    broker = MosquittoBroker(binary=binary, workdir=workdir, port=free_port())
    broker.config_path.write_text(
        _COMMON + f"allow_anonymous true\nlistener {broker.port} 127.0.0.1\n"
    )
    return broker


def _secure_broker(binary: str, workdir: Path) -> MosquittoBroker:
    passwd_bin = _mosquitto_passwd_binary()
    if passwd_bin is None:
        pytest.skip("mosquitto_passwd is not installed (.ci/run installs mosquitto)")
    workdir.mkdir(parents=True, exist_ok=True)
    pki = make_pki(workdir)
    username, password = "gateway", secrets.token_urlsafe(12)
    passwd = workdir / "passwd"
    subprocess.run([passwd_bin, "-c", "-b", str(passwd), username, password], check=True,
                   capture_output=True)
    subprocess.run([passwd_bin, "-b", str(passwd), "reader", "readpass"], check=True,
                   capture_output=True)
    acl = workdir / "acl"
    acl.write_text(
        "user gateway\ntopic readwrite han/#\ntopic readwrite homeassistant/#\n\n"
        "user reader\ntopic read han/#\ntopic read homeassistant/#\n"
    )
    broker = MosquittoBroker(
        binary=binary,
        workdir=workdir,
        port=free_port(),
        tls_port=free_port(),
        ca_path=pki.ca_path,
        client_cert=pki.client_cert,
        client_key=pki.client_key,
        username=username,
        password=password,
    )
    broker.config_path.write_text(
        _COMMON
        + f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n\n"
        + f"listener {broker.port} 127.0.0.1\n\n"
        + f"listener {broker.tls_port} 127.0.0.1\n"
        + f"cafile {pki.ca_path}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
        + "tls_version tlsv1.2\nrequire_certificate false\n"
    )
    return broker


BrokerFactory = Callable[..., MosquittoBroker]


@pytest.fixture(scope="session")
def mosquitto_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerFactory]:
    """``factory(secure=False) -> MosquittoBroker``, started; all stopped at session end."""
    binary = _mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto is not installed (.ci/run installs the Debian package)")
    brokers: list[MosquittoBroker] = []

    def factory(*, secure: bool = False) -> MosquittoBroker:
        assert binary is not None
        workdir = tmp_path_factory.mktemp("mosquitto")
        broker = _secure_broker(binary, workdir) if secure else _plain_broker(binary, workdir)
        brokers.append(broker)
        broker.start()
        return broker

    yield factory
    for broker in brokers:
        broker.stop()


@pytest.fixture(scope="session")
def _mosquitto_session(mosquitto_factory: BrokerFactory) -> MosquittoBroker:
    return mosquitto_factory()


@pytest.fixture(scope="session")
def _mosquitto_secure_session(mosquitto_factory: BrokerFactory) -> MosquittoBroker:
    return mosquitto_factory(secure=True)


@pytest.fixture
def mosquitto(_mosquitto_session: MosquittoBroker) -> Iterator[MosquittoBroker]:
    """The session's plain anonymous broker (running; restarted if a test stopped it)."""
    _mosquitto_session.start()
    yield _mosquitto_session
    _mosquitto_session.start()


@pytest.fixture
def mosquitto_secure(_mosquitto_secure_session: MosquittoBroker) -> Iterator[MosquittoBroker]:
    """The session's TLS + password + ACL broker (user ``gateway``, random password)."""
    _mosquitto_secure_session.start()
    yield _mosquitto_secure_session
    _mosquitto_secure_session.start()


# -------------------------------------------------------------- subscriber
@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    @property
    def text(self) -> str:
        return self.payload.decode()

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A paho client on its own thread (test side only) collecting messages."""

    def __init__(
        self,
        broker: MosquittoBroker,
        topics: tuple[str, ...],
        *,
        tls: bool = False,
        auth: tuple[str, str] | None = None,
        qos: int = 1,
        persistent: bool = False,
    ) -> None:
        self.broker = broker
        self._topics = topics
        self._qos = qos
        self._lock = threading.Lock()
        self._messages: list[Message] = []
        self._subscribed = threading.Event()
        # persistent: a durable session (clean_session=False) so that the broker queues
        # QoS 1 messages while this subscriber is away, as Home Assistant's client does.
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{secrets.token_hex(4)}",
            clean_session=not persistent,
        )
        self._client.reconnect_delay_set(min_delay=0.1, max_delay=1)
        if auth is not None:
            self._client.username_pw_set(*auth)
        if tls:
            assert broker.ca_path is not None
            self._client.tls_set(ca_certs=str(broker.ca_path))
        self._port = broker.tls_port if tls and broker.tls_port else broker.port
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe([(t, self._qos) for t in self._topics])

    def _on_subscribe(self, _c: paho.Client, _u: Any, _mid: int, _r: Any, _p: Any) -> None:
        self._subscribed.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self._messages.append(Message(msg.topic, bytes(msg.payload), msg.retain, msg.qos))

    def start(self, timeout_s: float = 5.0) -> Subscriber:
        self._client.connect(self.broker.host, self._port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.close()
            raise RuntimeError(f"subscriber could not subscribe on port {self._port}")
        return self

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        # paho 2.2's loop_start() makes a socket pair that loop_stop() leaves open
        # (a ResourceWarning at garbage collection); close it here.
        self._client._reset_sockets(sockpair_only=True)  # noqa: SLF001

    @property
    def local_port(self) -> int | None:
        sock = self._client.socket()
        if not isinstance(sock, socket.socket):
            return None
        port: int = sock.getsockname()[1]
        return port

    @property
    def messages(self) -> list[Message]:
        with self._lock:
            return list(self._messages)

    def on(self, topic: str) -> list[Message]:
        return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> Message | None:
        found = self.on(topic)
        return found[-1] if found else None

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    async def wait_for(
        self, predicate: Callable[[Message], bool], timeout: float = 5.0
    ) -> Message:
        """The first collected message matching ``predicate`` (waits without blocking the loop).

        Raises:
            TimeoutError: none arrived within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            for m in self.messages:
                if predicate(m):
                    return m
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no matching message within {timeout} s; got {self._summary()}")
            await asyncio.sleep(0.02)

    async def wait_until(
        self, condition: Callable[[list[Message]], bool], timeout: float = 5.0
    ) -> list[Message]:
        """Wait until ``condition(messages)`` holds; returns the messages.

        Raises:
            TimeoutError: it did not hold within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages
            if condition(msgs):
                return msgs
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s; got {self._summary()}")
            await asyncio.sleep(0.02)

    def _summary(self) -> str:
        msgs = self.messages
        tail = [(m.topic, m.payload[:60], m.retain) for m in msgs[-8:]]
        return f"{len(msgs)} messages, last: {tail}"


SubscriberFactory = Callable[..., Subscriber]


@pytest.fixture
def mqtt_subscriber() -> Iterator[SubscriberFactory]:
    """``factory(broker, *topics, tls=False, auth=None, qos=1) -> Subscriber`` (started)."""
    subs: list[Subscriber] = []

    def factory(
        broker: MosquittoBroker,
        *topics: str,
        tls: bool = False,
        auth: tuple[str, str] | None = None,
        qos: int = 1,
        persistent: bool = False,
    ) -> Subscriber:
        sub = Subscriber(broker, topics or ("#",), tls=tls, auth=auth, qos=qos, persistent=persistent).start()
        subs.append(sub)
        return sub

    yield factory
    for sub in subs:
        sub.close()


# ------------------------------------------------------------ fault tools
def _abort_connections(port: int, keep: tuple[int | None, ...] = ()) -> int:
    """Shut down this process's TCP connections to 127.0.0.1:``port``.

    Sockets whose local port is in ``keep`` are spared.  The peer sees the
    connection close without an MQTT DISCONNECT (so a broker sends the will).
    Returns how many connections were shut down.
    """
    aborted = 0
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            dup = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with dup:
            try:
                if dup.type != socket.SOCK_STREAM or dup.family != socket.AF_INET:
                    continue
                peer = dup.getpeername()
                local = dup.getsockname()
            except OSError:
                continue
            if peer == ("127.0.0.1", port) and local[1] not in keep:
                dup.shutdown(socket.SHUT_RDWR)
                aborted += 1
    return aborted


@pytest.fixture
def abort_connections() -> Callable[..., int]:
    """``abort(port, keep=(local ports...)) -> int``: see ``_abort_connections``."""
    return _abort_connections
