"""The sandbox a submission's code runs in: Debian's bubblewrap (`bwrap`), with resource limits.

`run(messages, timeout)` runs `python -I runner.py` (grading/runner.py), talking to it over its
stdin and stdout only, as an unprivileged user (uid/gid 65534) in new user, network, PID, IPC and
UTS namespaces. What it can see, all read-only: /usr, the Python installation and the virtual
environment (the `medsight_lab` in it masked) and the runner script. It can write only to a
size-capped tmpfs /tmp; the root, /dev and everything else are read-only. There is no /proc, no
network (not even 127.0.0.1 of the host), no repository, no reference notebook, no other
submission and no grade output. The runner is PID 1 of its namespace: when it ends or is killed
(here, or by `--die-with-parent` when the grader dies), the kernel kills every process it started.
Limits (`Limits`): address space, processes, file size, CPU time, and the bytes read back.

`problem()` says why the sandbox cannot start on this machine (and how to fix it), or None.
With `unsafe=True` (`--grade-unsafe`) the runner runs as a plain child process with the same
limits but none of the isolation: only for a disposable machine or container.
"""

from __future__ import annotations

import functools
import os
import resource
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RUNNER = Path(__file__).with_name("runner.py")
BWRAP = os.environ.get("MEDSIGHT_BWRAP", "/usr/bin/bwrap")   # another path, e.g. /usr/local/bin
NOBODY = 65534
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install -y bubblewrap) and allow "
                "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1; on "
                "Ubuntu 24.04 also kernel.apparmor_restrict_unprivileged_userns=0); or, on a "
                "disposable machine that holds nothing else, grade with --grade-unsafe")


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 2 << 30      # address space: torch needs ~0.7 GiB of it to import
    processes: int = 64              # RLIMIT_NPROC (not enforced when the grader runs as root)
    file_bytes: int = 16 << 20       # largest file it may write (in its /tmp)
    tmp_bytes: int = 64 << 20        # its /tmp, a tmpfs
    cpu_s: int = 600                 # CPU seconds, all exercises together
    read_bytes: int = 256 << 20      # most bytes read back from its stdout
    stderr_bytes: int = 64 << 10     # kept of its stderr, for the grader's diagnostics only


@dataclass
class Run:
    answers: list          # the runner's answers (bytes), one per message it answered
    stderr: str
    returncode: int | None
    timed_out: bool = False
    too_large: bool = False


def _ro_binds():
    """The folders Python and its packages need, deduplicated (no path inside another)."""
    paths = {Path("/usr"), Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(),
             Path(sys.executable).resolve().parent}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        paths.add(Path(sysconfig.get_paths()[key]).resolve())
    keep = sorted(p for p in paths if p.exists())
    return [p for p in keep if not any(p != q and p.is_relative_to(q) for q in keep)]


def _masked_packages():
    """A `medsight_lab` installed as a real folder in site-packages: hidden in the sandbox (an
    editable install's .pth and finder point into the repository, which is not mounted)."""
    found = []
    for key in ("purelib", "platlib"):
        candidate = Path(sysconfig.get_paths()[key]) / "medsight_lab"
        if candidate.is_dir():
            found.append(candidate.resolve())
    return sorted(set(found))


def bwrap_command(limits=Limits(), argv=None):
    """The bwrap command line that runs `argv` (default: the runner) in the sandbox."""
    command = [BWRAP, "--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY),
               "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
               "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--as-pid-1",
               "--clearenv", "--setenv", "HOME", "/tmp", "--setenv", "PATH", "/usr/bin:/bin",
               "--setenv", "OMP_NUM_THREADS", "1", "--setenv", "MKL_NUM_THREADS", "1"]
    for name in ("bin", "lib", "lib64", "sbin"):       # merged-/usr systems: /bin -> usr/bin
        link = Path("/") / name
        if link.is_symlink():
            command += ["--symlink", os.readlink(link), str(link)]
    # /dev and the private /tmp first: bwrap mounts in order, and a virtualenv that lives under
    # /tmp (a checkout in /tmp) must be bound on top of the new /tmp, not hidden by it.
    command += ["--dev", "/dev", "--remount-ro", "/dev",
                "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
    for path in _ro_binds():
        command += ["--ro-bind", str(path), str(path)]
    for path in _masked_packages():
        command += ["--tmpfs", str(path)]
    command += ["--ro-bind", str(RUNNER), "/runner/runner.py",
                "--remount-ro", "/",          # bwrap's root is a tmpfs: writable until this
                "--chdir", "/tmp"]
    return command + (argv or [sys.executable, "-I", "/runner/runner.py"])


def limit_resources(limits):
    """A preexec function: `limits` on the process about to exec, and so on all it starts."""
    def preexec():
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return preexec


@functools.lru_cache(maxsize=None)
def problem():
    """None if the sandbox starts here, else why not and what to do (probed once per process)."""
    if not os.path.exists(BWRAP):
        return f"the grading sandbox needs {BWRAP}, which is missing: {INSTALL_HINT}"
    command = bwrap_command(argv=[sys.executable, "-I", "-S", "-c", "pass"])
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60,
                              preexec_fn=limit_resources(Limits()))
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"the grading sandbox did not start ({err}): {INSTALL_HINT}"
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return f"the grading sandbox did not start (bwrap: {why}): {INSTALL_HINT}"
    return None


def run(messages, timeout, limits=Limits(), unsafe=False):
    """Run the runner under the sandbox (or, `unsafe`, without it) for at most `timeout` seconds,
    sending it `messages` (bytes) one at a time: the next only once it has answered the last.
    Returns when it, and everything it started, has ended."""
    scratch = None
    if unsafe:
        scratch = tempfile.mkdtemp(prefix="medsight-unsafe-")
        command, cwd = [sys.executable, "-I", str(RUNNER)], scratch
        env = {"PATH": "/usr/bin:/bin", "HOME": scratch, "OMP_NUM_THREADS": "1"}
    else:
        command, cwd, env = bwrap_command(limits), None, {}
    process = start(command, limits, stdin=subprocess.PIPE, cwd=cwd, env=env)
    os.set_blocking(process.stdin.fileno(), False)
    answers, stdout, stderr = [], bytearray(), bytearray()
    to_send = bytearray(frame(messages[0])) if messages else bytearray()
    sent = 1 if messages else 0
    timed_out = too_large = False
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ, "stdout")
        selector.register(process.stderr, selectors.EVENT_READ, "stderr")
        selector.register(process.stdin, selectors.EVENT_WRITE, "stdin")
        while len(answers) < len(messages):
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            events = selector.select(min(left, 1.0))
            if not events and process.poll() is not None:
                break
            for key, _ in events:
                if key.data == "stdin":
                    try:
                        del to_send[:os.write(key.fd, to_send)]
                    except (BlockingIOError, BrokenPipeError):
                        pass
                    if not to_send:
                        selector.unregister(key.fileobj)
                    continue
                chunk = os.read(key.fd, 1 << 20)
                if not chunk:
                    selector.unregister(key.fileobj)
                    if key.data == "stdout":
                        process.wait(timeout=max(deadline - time.monotonic(), 0.1))
                    continue
                if key.data == "stderr":
                    stderr += chunk
                    del stderr[:-limits.stderr_bytes]
                    continue
                stdout += chunk
                while len(stdout) >= 8 and len(stdout) >= 8 + struct.unpack(">Q", stdout[:8])[0]:
                    size = struct.unpack(">Q", stdout[:8])[0]
                    answers.append(bytes(stdout[8:8 + size]))
                    del stdout[:8 + size]
                    if sent < len(messages):
                        to_send += frame(messages[sent])
                        sent += 1
                        if process.stdin not in [k.fileobj for k in selector.get_map().values()]:
                            selector.register(process.stdin, selectors.EVENT_WRITE, "stdin")
                if len(stdout) >= 8 and struct.unpack(">Q", stdout[:8])[0] > limits.read_bytes:
                    too_large = True
            if too_large or (not selector.get_map()):
                break
    _kill_group(process)
    for stream in (process.stdin, process.stdout, process.stderr):
        try:
            stream.close()
        except OSError:
            pass
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return Run(answers, stderr.decode(errors="replace"), process.returncode, timed_out,
               too_large)


def frame(data):
    """`data` with its 8-byte length in front (runner.read_frame reads it)."""
    return struct.pack(">Q", len(data)) + data


def start(command, limits=Limits(), stdin=subprocess.DEVNULL, **popen):
    """Start `command` (e.g. `bwrap_command(...)`) with `limits`, in a session of its own."""
    return subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=limit_resources(limits), **popen)


def _kill_group(process):
    """Kill the runner's process group and wait for it: bwrap's death takes the sandbox's PID
    namespace, and so every process in it, along (--die-with-parent)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
