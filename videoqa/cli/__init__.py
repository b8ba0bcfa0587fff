"""The ``videoqa`` command: :mod:`.main` holds the subcommands (``ask``, ``info``; ``eval`` and ``demo``
are mounted lazily from their own packages), :mod:`.args` the argument types they share."""

from .main import COMMANDS, Command, build_parser, main

__all__ = ["COMMANDS", "Command", "build_parser", "main"]
