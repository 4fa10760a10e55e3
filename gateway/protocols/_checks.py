"""Checksums shared by the codecs.

CRC-16/ARC (poly 0x8005 reflected = 0xA001, init 0, no final xor) is the P1
telegram CRC of DSMR 4+ (computed over ``/`` … ``!`` inclusive).  The IEC
62056-21 block check character is the XOR of every byte after SOH/STX up to
and including ETX/EOT.
"""

from __future__ import annotations


def _make_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC16_ARC = _make_table()


def crc16_arc(data: bytes, crc: int = 0) -> int:
    table = _CRC16_ARC
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def bcc(data: bytes) -> int:
    """XOR of all bytes (IEC 62056-21 block check character)."""
    x = 0
    for b in data:
        x ^= b
    return x
