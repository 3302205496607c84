"""The minimal core of ovnk: watch loop, OVN transaction manager, node agent, CNI path and hooks.

Only modules under ``ovnk.core.kube`` talk to the API server, only
``ovnk.core.ovn`` commits to OVSDB and only ``ovnk.core.node`` touches the
kernel. Features, including core ones such as services and network policy,
are plugins (see ``ovnk.core.hookspecs``).
"""
