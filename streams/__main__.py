"""``python -m streams`` runs the partnerpulse command."""

from .cli import main

main()
