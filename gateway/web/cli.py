"""``han-gateway web hash-password``: make the ``[web] password_hash`` value.

Asks twice on a terminal (the password is never echoed), or reads one line
from standard input when piped (``echo -n secret | han-gateway web
hash-password``); prints only the hash.
"""

from __future__ import annotations

import getpass
import sys

from gateway.web.config import hash_password

MIN_LENGTH = 8


def hash_password_command() -> int:
    if sys.stdin.isatty():
        first = getpass.getpass("web password: ")
        if getpass.getpass("again: ") != first:
            print("han-gateway: the passwords differ", file=sys.stderr)
            return 2
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    if len(first) < MIN_LENGTH:
        print(f"han-gateway: use at least {MIN_LENGTH} characters", file=sys.stderr)
        return 2
    print(hash_password(first))
    print('put it in the config as:  [web] password_hash = "<the line above>"', file=sys.stderr)
    return 0
