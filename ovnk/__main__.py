"""``python -m ovnk`` runs the ``ovnk`` command line."""

from ovnk.core.cli import main

main()
