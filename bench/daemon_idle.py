"""The idle daemon: CPU share and resident memory of `songnet run` with nothing to do.

Two cases, each a real `songnet run` process on default intervals (watch 30 s, heartbeat 30 s):

- restarted: a data directory that already holds a trained model and its playlist (made
  with `songnet run --once` on the synthetic demo export), the daemon started on it;
- after work: an empty data directory; the demo export is dropped in, the daemon imports it,
  trains (short training, as `--demo` does) and writes the first playlist, then idles. The
  training and the generation ran in child processes (`service/child_process.py`), so the
  daemon idles without torch (the goal: at most 400 MB, ideally 200 MB).

After the daemon has settled, CPU time (utime + stime from /proc) is read over `--windows`
windows of `--seconds` each; the figures are medians over the windows. Each case also says
whether torch's library is mapped into the daemon, and the peak RSS it reached (VmHWM).

    .venv/bin/python bench/daemon_idle.py [--seconds 30] [--windows 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.cli.daemon import DEMO_COVERAGE, DEMO_EPOCHS, put_demo_export
from tests.daemon_process import DaemonProcess, maps_torch, run_songnet, songnet_env

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib(pid: int) -> float:
    return status_mib(pid, "VmRSS")


def report(case: str, daemon: DaemonProcess, cpu: float, rss: float) -> None:
    torch = "loaded" if maps_torch(daemon.pid) else "not loaded"
    peak = status_mib(daemon.pid, "VmHWM")
    print(f"{case}: cpu {cpu:.2f} %  rss {rss:.0f} MiB  (peak {peak:.0f} MiB; torch {torch})")


def measure(daemon: DaemonProcess, seconds: float, windows: int) -> tuple[float, float]:
    shares, rss = [], []
    for _ in range(windows):
        c0, t0 = cpu_seconds(daemon.pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = cpu_seconds(daemon.pid), time.monotonic()
        shares.append(100 * (c1 - c0) / (t1 - t0))
        rss.append(rss_mib(daemon.pid))
    return statistics.median(shares), statistics.median(rss)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="length of one measuring window"
    )
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args()
    quick = {"train_max_epochs": str(DEMO_EPOCHS), "train_epoch_coverage": str(DEMO_COVERAGE)}
    root = Path(tempfile.mkdtemp(prefix="songnet-idle-"))
    try:
        # Restarted on a trained data directory.
        env = songnet_env(root / "a" / "data", root / "a" / "exports", **quick)
        put_demo_export(root / "a" / "exports")
        done = run_songnet(["run", "--once"], env, timeout=1800)
        assert done.returncode == 0, done.stderr[-2000:]
        daemon = DaemonProcess(["run"], env)
        try:
            daemon.wait_event("daemon started", timeout=120)
            time.sleep(5)  # start-up checks
            cpu, rss = measure(daemon, args.seconds, args.windows)
            report("restarted, idle", daemon, cpu, rss)
        finally:
            daemon.signal()
            daemon.wait(30)
            daemon.stop()

        # After importing, training and writing the first playlist itself.
        env = songnet_env(root / "b" / "data", root / "b" / "exports", **quick)
        staging = root / "b" / "staging"
        put_demo_export(staging)
        daemon = DaemonProcess(["run"], env)
        try:
            daemon.wait_event("daemon started", timeout=120)
            shutil.move(str(staging), str(root / "b" / "exports"))
            daemon.wait_event("job finished", job="first-playlists", timeout=1800)
            time.sleep(5)
            cpu, rss = measure(daemon, args.seconds, args.windows)
            report("after import, training and the first playlist, idle", daemon, cpu, rss)
        finally:
            daemon.signal()
            daemon.wait(30)
            daemon.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"(median of {args.windows} windows of {args.seconds:g} s each; watch and heartbeat every 30 s)"
    )


if __name__ == "__main__":
    main()
