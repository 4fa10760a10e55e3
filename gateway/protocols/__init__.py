"""Sans-IO codecs: bytes in, typed frames out. No asyncio, sockets, serial or logging here."""
