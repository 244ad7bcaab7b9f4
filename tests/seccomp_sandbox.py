"""Run a command under the seccomp policy a systemd unit asks for, without systemd.

The units in `systemd/` cannot be started here (no systemd as PID 1), yet their system-call
policy is what could break the daemon: torch and SQLite call what they call. This module reads a
unit's `SystemCallFilter=`, `SystemCallErrorNumber=`, `SystemCallArchitectures=native`,
`RestrictAddressFamilies=` and `MemoryDenyWriteExecute=`, expands the syscall groups with
`systemd-analyze syscall-filter` (so the lists are systemd's own), compiles them to a classic BPF
program the way systemd 252 applies them (x86-64 only), installs it with `prctl` after
`PR_SET_NO_NEW_PRIVS`, and execs the command:

    python tests/seccomp_sandbox.py systemd/songnet.service -- songnet run --once

Denied calls fail with the unit's errno (as systemd does with `SystemCallErrorNumber=`), so a
command that needs one of them fails visibly rather than being killed without a trace.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import struct
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

UNISTD_64 = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")

# <linux/audit.h>, <linux/filter.h>, <linux/seccomp.h>, <sys/prctl.h>
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
BPF_LD_W_ABS = 0x20
BPF_ALU_AND_K = 0x54
BPF_JMP_JA = 0x05
BPF_JMP_JEQ_K = 0x15
BPF_JMP_JSET_K = 0x45
BPF_RET_K = 0x06
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_MODE_FILTER = 2
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
OFF_NR, OFF_ARCH = 0, 4


def _off_arg(i: int) -> int:
    return 16 + 8 * i  # low 32 bits of args[i] (little endian)


PROT_WRITE, PROT_EXEC = 0x2, 0x4
SHM_EXEC = 0o100000
FAMILIES = {
    "AF_UNIX": 1,
    "AF_LOCAL": 1,
    "AF_INET": 2,
    "AF_INET6": 10,
    "AF_NETLINK": 16,
    "AF_PACKET": 17,
}


class SandboxUnavailableError(RuntimeError):
    """This machine cannot emulate the policy (not x86-64 Linux, no systemd-analyze, …)."""


@dataclass
class Policy:
    allowed: set[int] | None = None  # None: no allow-list
    denied: set[int] = field(default_factory=set)
    errno_value: int = errno.EPERM
    native_only: bool = False
    families: set[int] | None = None  # None: any family
    deny_write_execute: bool = False


def syscall_numbers() -> dict[str, int]:
    if not UNISTD_64.is_file():
        raise SandboxUnavailableError(f"{UNISTD_64} is missing (Debian package linux-libc-dev)")
    table = {}
    for m in re.finditer(r"#define __NR_(\w+) (\d+)", UNISTD_64.read_text()):
        table[m.group(1)] = int(m.group(2))
    return table


@cache
def expand_group(name: str) -> frozenset[str]:
    """The syscalls of a `@group` as this machine's systemd defines it, nested groups expanded."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True
    ).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        names |= expand_group(word) if word.startswith("@") else {word}
    return frozenset(names)


def _expand(words: Iterable[str]) -> set[str]:
    names: set[str] = set()
    for w in words:
        names |= expand_group(w) if w.startswith("@") else {w}
    return names


def unit_settings(unit: Path) -> dict[str, list[str]]:
    """`[Service]` assignments of a unit file, each key's values in order."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]" and "=" in line:
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def policy_from_unit(unit: Path) -> Policy:
    s = unit_settings(unit)
    numbers = syscall_numbers()
    policy = Policy()
    allowed: set[str] | None = None
    denied: set[str] = set()
    # systemd: the first non-inverted assignment makes an allow-list; `~` lines remove from it.
    for value in s.get("SystemCallFilter", []):
        inverted = value.startswith("~")
        words = value.lstrip("~").split()
        if inverted:
            if allowed is None:
                denied |= _expand(words)
            else:
                allowed -= _expand(words)
        else:
            allowed = (allowed or set()) | _expand(words)
    if allowed is not None:
        policy.allowed = {numbers[n] for n in allowed if n in numbers}
    policy.denied = {numbers[n] for n in denied if n in numbers}
    for value in s.get("SystemCallErrorNumber", []):
        policy.errno_value = getattr(errno, value)
    policy.native_only = "native" in s.get("SystemCallArchitectures", [])
    for value in s.get("RestrictAddressFamilies", []):
        if value.startswith("~"):
            raise SandboxUnavailableError("deny-listed address families are not emulated")
        policy.families = (policy.families or set()) | {FAMILIES[f] for f in value.split()}
    policy.deny_write_execute = any(
        v.lower() in ("yes", "true", "1", "on") for v in s.get("MemoryDenyWriteExecute", [])
    )
    return policy


def _ins(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def compile_policy(policy: Policy) -> bytes:
    """Classic BPF for `policy`: a flat chain of (compare, return) pairs, well under 4096."""
    deny = _ins(BPF_RET_K, SECCOMP_RET_ERRNO | policy.errno_value)
    allow = _ins(BPF_RET_K, SECCOMP_RET_ALLOW)
    numbers = syscall_numbers()
    prog = [_ins(BPF_LD_W_ABS, OFF_ARCH), _ins(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0), deny]
    prog.append(_ins(BPF_LD_W_ABS, OFF_NR))
    if policy.native_only:
        prog += [_ins(BPF_JMP_JSET_K, X32_SYSCALL_BIT, 0, 1), deny]

    # Argument checks first; each block either returns or reloads the syscall number.
    def arg_block(nr: int, body: list[bytes]) -> list[bytes]:
        return [_ins(BPF_JMP_JEQ_K, nr, 0, len(body)), *body]

    if policy.deny_write_execute:
        # systemd's MemoryDenyWriteExecute=: no mmap both writable and executable, no
        # mprotect/pkey_mprotect adding PROT_EXEC, no shmat with SHM_EXEC.
        wx = PROT_WRITE | PROT_EXEC
        prog += arg_block(numbers["mmap"], [
            _ins(BPF_LD_W_ABS, _off_arg(2)), _ins(BPF_ALU_AND_K, wx),
            _ins(BPF_JMP_JEQ_K, wx, 0, 1), deny, _ins(BPF_LD_W_ABS, OFF_NR),
        ])  # fmt: skip
        for name in ("mprotect", "pkey_mprotect"):
            prog += arg_block(numbers[name], [
                _ins(BPF_LD_W_ABS, _off_arg(2)), _ins(BPF_JMP_JSET_K, PROT_EXEC, 0, 1), deny,
                _ins(BPF_LD_W_ABS, OFF_NR),
            ])  # fmt: skip
        prog += arg_block(numbers["shmat"], [
            _ins(BPF_LD_W_ABS, _off_arg(2)), _ins(BPF_JMP_JSET_K, SHM_EXEC, 0, 1), deny,
            _ins(BPF_LD_W_ABS, OFF_NR),
        ])  # fmt: skip
    if policy.families is not None:
        # RestrictAddressFamilies= answers EAFNOSUPPORT for socket() of other families.
        fam = sorted(policy.families)
        body = [_ins(BPF_LD_W_ABS, _off_arg(0))]
        for i, f in enumerate(fam):
            body.append(_ins(BPF_JMP_JEQ_K, f, len(fam) - i, 0))
        body.append(_ins(BPF_RET_K, SECCOMP_RET_ERRNO | errno.EAFNOSUPPORT))
        body.append(_ins(BPF_LD_W_ABS, OFF_NR))
        prog += arg_block(numbers["socket"], body)
    for nr in sorted(policy.denied):
        prog += [_ins(BPF_JMP_JEQ_K, nr, 0, 1), deny]
    if policy.allowed is None:
        prog.append(allow)
    else:
        for nr in sorted(policy.allowed):
            prog += [_ins(BPF_JMP_JEQ_K, nr, 0, 1), allow]
        prog.append(deny)
    if len(prog) > 4096:
        raise SandboxUnavailableError(f"filter of {len(prog)} instructions exceeds BPF's 4096")
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(program: bytes) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def check_platform() -> None:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise SandboxUnavailableError("the emulation is written for x86-64 Linux")
    syscall_numbers()
    try:
        expand_group("@default")
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SandboxUnavailableError(f"systemd-analyze syscall-filter failed: {exc}") from exc


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        sys.exit("usage: python tests/seccomp_sandbox.py UNIT -- COMMAND [ARG...]")
    unit, command = Path(argv[0]), argv[2:]
    program = compile_policy(policy_from_unit(unit))
    install(program)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
