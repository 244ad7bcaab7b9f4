"""Gates for the deployment tests: the system tools they drive (systemd-analyze, buildah, …).

On a developer's machine without them the tests skip and say what to install; in CI
(`CI=true`, where `.ci/run` installs them) a missing tool fails the test instead, so a broken
install step cannot turn the deployment checks into silent skips.
"""

from __future__ import annotations

import os
import shutil

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
