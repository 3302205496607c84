"""Multicast: IP multicast between the pods of a namespace, per namespace, with IGMP/MLD snooping.

Entry point :mod:`ovnk.plugins.multicast.plugin`; see ``docs/plugins/multicast.md``.
Importing this package has no side effects.
"""
