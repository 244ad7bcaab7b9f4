"""The `songnet` command line; see `app.py`. Importing this module registers every command."""

from service.cli.app import app, main

# Each module registers its commands on `app` when imported.
from service.cli import library  # noqa: F401  isort: skip
from service.cli import features  # noqa: F401  isort: skip
from service.cli import model  # noqa: F401  isort: skip
from service.cli import generate  # noqa: F401  isort: skip
from service.cli import daemon  # noqa: F401  isort: skip
from service.cli import spotify  # noqa: F401  isort: skip
from service.cli import importing  # noqa: F401  isort: skip
from service.cli import evaluation  # noqa: F401  isort: skip
from service.cli import maintenance  # noqa: F401  isort: skip

__all__ = ["app", "main"]
