"""The household's local page: live values, history with comparisons, health, /api and /metrics.

Served by the daemon itself (aiohttp) on the home network, with no cloud and
no external requests: the chart library is a vendored static file
(``static/VENDORED.md``).  See ``server.py`` for the routes, ``config.py`` for
``[web]`` and the password, ``data.py`` for what the numbers mean.
"""

from __future__ import annotations

from gateway.web.config import WebConfig, check_warnings
from gateway.web.context import WebContext
from gateway.web.server import WebServer, WebServerError

__all__ = ["WebConfig", "WebContext", "WebServer", "WebServerError", "check_warnings"]
