"""The node agent: the only place that touches the kernel (pyroute2) and the local OVS."""
