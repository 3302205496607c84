"""Core behaviour written as plugins (pytest's default plugins); always registered."""
