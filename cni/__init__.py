"""The CNI path: a stdlib-only shim run per pod and the server inside the node agent.

Importing this package must stay free of heavy imports: the shim starts once per
pod and must come up in a few milliseconds.
"""
