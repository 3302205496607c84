"""Secondary networks (multi-homing): extra pod interfaces on layer3, layer2 and localnet networks.

A pod asks for them with ``k8s.v1.cni.cncf.io/networks``; each names a
NetworkAttachmentDefinition of type ``ovn-k8s-cni-overlay``. See
``docs/plugins/secondary_networks.md``.
"""
