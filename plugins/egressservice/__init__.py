"""EgressService: a LoadBalancer Service's endpoints leave the cluster with its ingress IP as source.

Entry point :mod:`ovnk.plugins.egressservice.plugin`; see ``docs/plugins/egressservice.md``.
Importing this package has no side effects.
"""
