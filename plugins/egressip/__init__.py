"""EgressIP: a stable source address for selected pods' traffic leaving the cluster.

Entry point :mod:`ovnk.plugins.egressip.plugin`; see ``docs/plugins/egressip.md``.
Importing this package has no side effects.
"""
