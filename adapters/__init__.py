"""Network adapters: one package per network, loaded through entry points."""
