"""The default network's logical topology: names, addressing, IPAM and row intents."""
