"""Gates for the deployment tests: the system tools they drive (systemd-analyze, buildah, …).

On a developer's machine without them the tests skip and say what to install; in CI
(`CI=true`, where `.ci/run` installs them) a missing tool fails the test instead, so a broken
install step cannot turn the deployment checks into silent skips.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

DEBIAN_PACKAGE = {
    "systemd-analyze": "systemd",
    "buildah": "buildah",
    "podman": "podman",
    "debootstrap": "debootstrap",
    "unshare": "util-linux",
}


def unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI installs it in .ci/run)")
    pytest.skip(message)


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        packages = " ".join(sorted({DEBIAN_PACKAGE.get(n, n) for n in missing}))
        unavailable(f"needs {', '.join(missing)}: apt-get install {packages}")


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        unavailable(f"needs root: {why}")


# A small export and quick training: the deployment is under test, not the model.
QUICK_RUN = {
    "SONGNET_WATCH_STABLE_SECONDS": "0",
    "SONGNET_WATCH_INTERVAL_SECONDS": "1",
    "SONGNET_RETRAIN_DEBOUNCE_SECONDS": "0",
    "SONGNET_TRAIN_MAX_EPOCHS": "1",
    "SONGNET_TRAIN_EPOCH_COVERAGE": "0.5",
    "SONGNET_TRAIN_MIN_STEPS": "4",
    "SONGNET_LOG_FORMAT": "json",
}
QUICK_PLAYLIST = "songnet-weekly"  # the default playlist's file name
QUICK_PLAYLIST_LENGTH = 30


def write_small_export(folder: Path, n_plays: int = 1500, seed: int = 3) -> None:
    from songnet_core.synthetic import SyntheticConfig, generate_plays, write_extended_export

    write_extended_export(generate_plays(SyntheticConfig(n_plays=n_plays, seed=seed)), folder)
