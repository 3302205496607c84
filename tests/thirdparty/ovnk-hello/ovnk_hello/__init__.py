"""ovnk-hello: a third-party ovnk plugin in miniature (see plugin.py), for authors to copy."""
