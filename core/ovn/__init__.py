"""OVN databases: the only place that opens OVSDB connections or commits transactions."""
