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


def _top_level_imports(folder: str) -> set[str]:
    found: set[str] = set()
    for path in sorted((REPO / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_runtime_dependencies_are_the_ones_imported() -> None:
    import re
    import sys
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {
        re.split(r"[<>=!~ \[;]", spec, maxsplit=1)[0].lower().replace("-", "_")
        for spec in project["dependencies"]
    }
    imported = _top_level_imports("songnet_core") | _top_level_imports("service")
    third_party = {
        name.lower()
        for name in imported
        if name not in sys.stdlib_module_names and name not in {"songnet_core", "service"}
    }
    assert sorted(third_party - declared) == [], "imported but not declared in pyproject.toml"
    assert sorted(declared - third_party) == [], "declared in pyproject.toml but never imported"


def test_the_daemons_modules_do_not_import_torch() -> None:
    # The daemon runs torch only in its children (service/child_tasks.py); a module-level
    # import anywhere on the daemon's path would load ~300 MB into the idle process.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import service.cli, service.daemon, service.jobs, service.publish, service.playlists\n"
        "import service.child_tasks, songnet_core.ranker\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
