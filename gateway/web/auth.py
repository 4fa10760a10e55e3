"""Sessions for the state-changing actions: password login, cookie, CSRF token.

A login with the configured password (scrypt, constant-time compare) creates a
random session id, sent as an ``HttpOnly; SameSite=Strict`` cookie (``Secure``
under TLS), and a separate random CSRF token that the page keeps in memory and
sends back in the ``X-CSRF-Token`` header of every state-changing request.  A
cross-site page can neither read that token nor make the browser send the
cookie with its request.  Sessions live in memory: a restart logs everybody out.

Failed logins are limited per client address (``MAX_FAILURES`` per
``FAILURE_WINDOW_S``); scrypt's cost makes each guess slow anyway.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass

COOKIE = "hg_session"
CSRF_HEADER = "X-CSRF-Token"
MAX_FAILURES = 5
FAILURE_WINDOW_S = 60.0
MAX_SESSIONS = 100


@dataclass(slots=True)
class Session:
    csrf: str
    expires: float  # time.monotonic()


class Sessions:
    def __init__(self, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, deque[float]] = {}

    def create(self) -> tuple[str, Session]:
        now = time.monotonic()
        self._expire(now)
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions, key=lambda k: self._sessions[k].expires)
            del self._sessions[oldest]
        sid = secrets.token_urlsafe(32)
        sess = Session(csrf=secrets.token_urlsafe(32), expires=now + self.lifetime_s)
        self._sessions[sid] = sess
        return sid, sess

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        now = time.monotonic()
        self._expire(now)
        return self._sessions.get(sid)

    def drop(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    @staticmethod
    def csrf_ok(sess: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(sess.csrf.encode(), token.encode())

    def _expire(self, now: float) -> None:
        for sid in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[sid]

    # ------------------------------------------------------------ throttling
    def throttled(self, client: str) -> bool:
        q = self._failures.get(client)
        if q is None:
            return False
        now = time.monotonic()
        while q and q[0] <= now - FAILURE_WINDOW_S:
            q.popleft()
        if not q:
            del self._failures[client]
            return False
        return len(q) >= MAX_FAILURES

    def failed(self, client: str) -> None:
        if len(self._failures) > 10000:  # bound memory against address sprays
            self._failures.clear()
        self._failures.setdefault(client, deque()).append(time.monotonic())
