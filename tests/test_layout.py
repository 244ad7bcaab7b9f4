"""The core stays pure: songnet_core imports nothing from the service layer or its libraries."""

from __future__ import annotations

import ast

from tests.conftest import REPO

FORBIDDEN = {"service", "spotipy", "sqlmodel", "sqlalchemy", "apscheduler", "typer", "rich", "requests"}


def test_core_imports_no_edge_modules() -> None:
    offenders = []
    for path in sorted((REPO / "songnet_core").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in FORBIDDEN:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    assert offenders == []
