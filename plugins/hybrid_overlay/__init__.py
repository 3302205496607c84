"""The hybrid overlay: OVN pods and the pods of nodes that do not run OVN (Windows) over VXLAN.

See ``docs/plugins/hybrid_overlay.md``. Importing this package has no side effects.
"""
