"""Hardware offload: SR-IOV VF pods on switchdev NICs, their representors on br-int, OVS ``hw-offload``.

See docs/plugins/hwoffload.md.
"""
