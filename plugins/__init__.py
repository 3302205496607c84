"""First-party feature plugins. Each registers through the ``ovnk.plugins`` entry-point group."""
