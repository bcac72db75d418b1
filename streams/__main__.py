"""``python -m streams`` runs the partnerpulse command."""

from streams.cli import main

main()
