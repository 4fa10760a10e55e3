"""systemd's sd_notify protocol: one datagram to $NOTIFY_SOCKET.

Written here rather than depending on a package: the protocol is a single
``sendto`` (systemd's sd_notify(3)), the only PyPI implementation (sdnotify)
is unmaintained since 2017, and python-systemd needs libsystemd headers to build.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        # An abstract socket name starts with '@' in the variable, NUL on the wire.
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_s: float | None = None
        if usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6

    @property
    def enabled(self) -> bool:
        return bool(self._addr)

    def notify(self, *fields: str) -> bool:
        if not self._addr:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto("\n".join(fields).encode(), self._addr)
        except OSError:
            return False
        return True
