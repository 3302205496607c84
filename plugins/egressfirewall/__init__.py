"""EgressFirewall: per-namespace allow/deny rules for traffic leaving the cluster.

Entry point :mod:`ovnk.plugins.egressfirewall.plugin`; see ``docs/plugins/egressfirewall.md``.
Importing this package has no side effects.
"""
