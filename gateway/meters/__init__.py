"""Meter readers: drive a codec over a transport and publish Snapshots on the bus.

This is the only layer where a codec's "need more data" meets ``await read()``.
"""
