"""Which virtual meter ``han-gateway simulate-meter --protocol P`` runs.

Each entry is ``"module:function"``; the function is ``async def f(args) -> int``
and receives the parsed command line (``--pty``/``--listen``/``--link``/``--key``/
``--auth-key``/``--interval``/``--option KEY=VALUE``...).  A protocol adds one line.
"""

from __future__ import annotations

SIMULATORS: dict[str, str] = {
    "dlms": "gateway.sim.dlms:run_cli",
    "dsmr": "gateway.sim.cli:run_dsmr",
    "iec62056-21": "gateway.sim.cli:run_iec62056_21",
    "mbus": "gateway.sim.mbus:run_cli",
    "sml": "gateway.sim.sml:run_cli",
}
