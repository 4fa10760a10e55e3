"""A plaintext P1 stream never loads the DLMS stack or ``cryptography``.

Most P1 ports are not encrypted, and those imports are ~10 MB of a gateway's
RSS; the decoder imports :mod:`gateway.protocols.dlms_gcm` only for an
encrypted stream.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from gateway.protocols import dlms_gcm, dsmr


def test_constants_agree_with_dlms_gcm() -> None:
    assert dsmr._GLO == dlms_gcm.GENERAL_GLO_CIPHERING
    assert dsmr._TITLE_LEN == dlms_gcm.SYSTEM_TITLE_LEN


def test_plaintext_decoding_imports_no_cryptography() -> None:
    # A fresh interpreter: this one has imported dlms_gcm above.
    code = textwrap.dedent(
        r"""
        import sys
        from gateway.protocols._checks import crc16_arc
        from gateway.protocols.dsmr import DsmrDecoder

        frame = b"/ISK5\\2M550T-1012\r\n\r\n1-3:0.2.8(50)\r\n1-0:1.8.1(000001.000*kWh)\r\n!"
        frame += b"%04X\r\n" % crc16_arc(frame)
        events = DsmrDecoder().feed(frame + b"\xdb\x01 not a ciphered frame")
        assert events and events[0].readings, events
        loaded = [m for m in sys.modules if m.startswith(("cryptography", "gateway.protocols.dlms"))]
        assert not loaded, loaded
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
