"""The demo export: a synthetic listener's two exports in `DATA_DIR/demo-export/`.

Written once per data directory: a later `songnet demo` finds it and imports it again (which
the import ledger turns into a no-op). The folder appears whole or not at all (written aside,
then renamed), so an interrupted demo never leaves half an export that looks complete.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import structlog

from songnet_core import synthetic

log = structlog.get_logger(__name__)

DEMO_FOLDER = "demo-export"
ABOUT_FILE = "ABOUT.txt"  # not JSON: import skips it when the folder itself is imported
DEFAULT_PLAYS = 20_000


class DemoError(Exception):
    """The demo folder cannot be used as it is; the message says what to do."""


@dataclass(frozen=True, slots=True)
class DemoExport:
    folder: Path
    account: list[Path]
    extended: list[Path]
    created: bool  # False when an earlier demo's export was found

    @property
    def files(self) -> list[Path]:
        """Account data first, as a listener who requested it earlier would import it."""
        return [*self.account, *self.extended]


def _about(plays: int, seed: int) -> str:
    return (
        "Synthetic Spotify exports written by `songnet demo`: an invented listener, nobody's\n"
        "real listening. The account data overlaps the extended history on part of its span.\n"
        f"plays: {plays}\nseed: {seed}\n"
    )


def _read_about(path: Path) -> dict[str, str]:
    fields = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition(": ")
        if sep and key in ("plays", "seed"):
            fields[key] = value.strip()
    return fields


def _natural(path: Path) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _listing(folder: Path) -> tuple[list[Path], list[Path]]:
    def files(sub: str) -> list[Path]:
        return sorted((folder / sub).glob("*.json"), key=_natural)

    return files(synthetic.ACCOUNT_FOLDER), files(synthetic.EXTENDED_FOLDER)


def ensure_demo_export(data_dir: Path, *, plays: int = DEFAULT_PLAYS, seed: int = 0) -> DemoExport:
    """The demo export in `data_dir`, written now unless an identical one is there already."""
    folder = data_dir / DEMO_FOLDER
    about = folder / ABOUT_FILE
    if folder.exists():
        if not about.is_file():
            raise DemoError(f"{folder} exists but was not written by `songnet demo`; move it aside")
        found = _read_about(about)
        if found != {"plays": str(plays), "seed": str(seed)}:
            raise DemoError(
                f"{folder} holds a demo of {found.get('plays', '?')} plays with seed {found.get('seed', '?')}, "
                f"not {plays} with seed {seed}: run the demo with those, or use another --data-dir"
            )
        account, extended = _listing(folder)
        if not extended:
            raise DemoError(f"{folder} lost its extended history files; delete the folder and run the demo again")
        log.info("demo export found", folder=str(folder), plays=plays, seed=seed)
        return DemoExport(folder, account, extended, created=False)

    data_dir.mkdir(parents=True, exist_ok=True)
    staging = data_dir / f".{DEMO_FOLDER}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        history = synthetic.generate_plays(synthetic.SyntheticConfig(n_plays=plays, seed=seed))
        synthetic.write_exports(history, staging, seed=seed)
        (staging / ABOUT_FILE).write_text(_about(plays, seed), encoding="utf-8")
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    account, extended = _listing(folder)
    log.info("demo export written", folder=str(folder), plays=plays, seed=seed, files=len(account) + len(extended))
    return DemoExport(folder, account, extended, created=True)
