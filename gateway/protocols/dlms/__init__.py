"""DLMS/COSEM (IEC 62056-46/-47/-5-3/-6-2): sans-IO codecs, one module per layer.

* :mod:`~gateway.protocols.dlms.hdlc`: HDLC frame format type 3 (IEC 62056-46), the
  LLC header, a stream decoder, SNRM/UA parameters and a sans-IO link (window 1).
* :mod:`~gateway.protocols.dlms.wrapper`: the TCP/UDP wrapper (IEC 62056-47).
* :mod:`~gateway.protocols.dlms.axdr`: A-XDR ``Data`` of every COSEM type (IEC 62056-6-2).
* :mod:`~gateway.protocols.dlms.apdu`: ACSE and xDLMS APDUs (IEC 62056-5-3).
* :mod:`~gateway.protocols.dlms.security`: security suite 0 (AES-GCM-128, HLS-GMAC).
* :mod:`~gateway.protocols.dlms.cosem`: interface classes, scaler/unit, push layouts.
* :mod:`~gateway.protocols.dlms.push`: :class:`DlmsPushDecoder`, the ``--protocol dlms``
  decoder for pushed data notifications (HDLC, wrapper, raw ciphered, M-Bus carried).

Importing this package imports none of the modules: pick the layer you need.
"""
