"""The sandbox a submission's code runs in: Debian's bubblewrap (`bwrap`), with resource limits.

`run(messages, timeout)` runs `python -I runner.py` (grading/runner.py), talking to it over its
stdin and stdout only, as an unprivileged user in new network, PID, IPC and UTS namespaces. What
it can see, all read-only: /usr, the Python installation and the virtual environment (the
`medsight_lab` in it masked) and the runner script. It can write only to a size-capped tmpfs /tmp;
the root, /dev and everything else are read-only. There is no /proc, no network (not even
127.0.0.1 of the host), no repository, no reference notebook, no other submission and no grade
output. The runner is PID 1 of its namespace: when it ends or is killed (here, or by
`--die-with-parent` when the grader dies), the kernel kills every process it started.
Limits (`Limits`): address space, processes, file size, CPU time, and the bytes read back.

Who the code runs as depends on who grades:

- an ordinary user: bwrap makes a user namespace of its own, in which the code is uid/gid 65534
  (and, outside, the grader's uid). The process limit is set inside that namespace (`prlimit`,
  after bwrap made it): the kernel counts a namespace's processes on their own, so the limit is
  the submission's whatever else the grader runs, other sandboxes included.
- root (CI, Gradescope's containers): Linux never applies the process limit to uid 0, and the
  user namespace that bwrap makes when run by root maps the code's uid to root's. So bwrap builds
  the sandbox as root, without a user namespace, and its first command, `setpriv`, drops for good
  to a uid of the sandbox's own (`own_uid`: from SANDBOX_UIDS, one per sandbox running on the
  machine at once; no capabilities, no groups, no new privileges) before anything else runs in
  it. The kernel counts processes per uid: with a uid of its own, a fork bomb in one submission
  cannot use up another's count. Python, the virtual environment and the runner must be readable
  by that uid (`problem` checks it). A root that may not make namespaces itself (a container's
  root without CAP_SYS_ADMIN) drops to that uid before bwrap instead, which then makes a user
  namespace as for an ordinary user: then that uid must also reach everything bwrap mounts, since
  bwrap reads it as the user who runs it (which is why this is not the first choice: Python often
  lives where only root may go, as under /root).

`problem()` says why the sandbox cannot start on this machine (and how to fix it), or None.
With `unsafe=True` (`--grade-unsafe`) the runner runs as a plain child process with the same
limits but none of the isolation (as root, not even the process limit): only for a disposable
machine or container.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import grp
import os
import pwd
import resource
import selectors
import shutil
import signal
import stat
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

RUNNER = Path(__file__).with_name("runner.py")
RUNNER_INSIDE = Path("/runner/runner.py")      # where the sandbox sees it
BWRAP = os.environ.get("MEDSIGHT_BWRAP", "/usr/bin/bwrap")   # another path, e.g. /usr/local/bin
NOBODY = 65534
SETPRIV = "/usr/bin/setpriv"     # util-linux, like prlimit: drops to the sandbox's uid (as root)
PRLIMIT = "/usr/bin/prlimit"     # sets the process limit inside the sandbox
# As root, each sandbox runs as a uid of its own from this range: above the ranges that systemd
# and container tools hand out (up to 1879048191), below the ones they reserve (from 2147352576),
# and, in it, only uids that the passwd, group, subuid and subgid files do not name. A lock file
# per uid in root's UID_LOCKS says which are taken, across every grading process on the machine.
SANDBOX_UIDS = range(2_000_000_000, 2_000_000_000 + 4096)
UID_LOCKS = Path("/run/medsight-lab-sandbox-uids")
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install -y bubblewrap) and allow "
                "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1; on "
                "Ubuntu 24.04 also kernel.apparmor_restrict_unprivileged_userns=0); or, on a "
                "disposable machine that holds nothing else, grade with --grade-unsafe")


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 2 << 30      # address space: torch needs ~0.7 GiB of it to import
    processes: int = 64              # RLIMIT_NPROC: processes at once, the runner included
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


def bwrap_command(limits=Limits(), argv=None, uid=None):
    """The bwrap command line that runs `argv` (default: the runner) in the sandbox: as `uid`
    when bwrap runs as root (`own_uid`), else as uid 65534 of a user namespace of its own."""
    command = [BWRAP]
    if uid is None:
        command += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    command += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--as-pid-1",
                "--clearenv", "--setenv", "HOME", "/tmp", "--setenv", "PATH", "/usr/bin:/bin",
                "--setenv", "OMP_NUM_THREADS", "1", "--setenv", "MKL_NUM_THREADS", "1"]
    for name in ("bin", "lib", "lib64", "sbin"):       # merged-/usr systems: /bin -> usr/bin
        link = Path("/") / name
        if link.is_symlink():
            command += ["--symlink", os.readlink(link), str(link)]
    # /dev and the private /tmp first: bwrap mounts in order, and a virtualenv that lives under
    # /tmp (a checkout in /tmp) must be bound on top of the new /tmp, not hidden by it.
    command += ["--dev", "/dev", "--remount-ro", "/dev", "--size", str(limits.tmp_bytes)]
    if uid is not None:
        command += ["--perms", "1777"]       # made by root: writable by the sandbox's uid too
    command += ["--tmpfs", "/tmp"]
    binds = _ro_binds()
    # bwrap makes the folders on the way to a mount point its owner's alone (0700): as root, the
    # sandbox's uid could not pass through them (they hold nothing but the mounts)
    for folder in _folders_on_the_way([*binds, RUNNER_INSIDE], mounts=["/tmp"]):
        command += ["--perms", "0755", "--dir", str(folder)]
    for path in binds:
        command += ["--ro-bind", str(path), str(path)]
    for path in _masked_packages():
        command += ["--tmpfs", str(path)]
    command += ["--ro-bind", str(RUNNER), str(RUNNER_INSIDE),
                "--remount-ro", "/",          # bwrap's root is a tmpfs: writable until this
                "--chdir", "/tmp"]
    inside = [PRLIMIT, f"--nproc={limits.processes}:{limits.processes}", "--"]
    if uid is not None:
        # setpriv, the first command in the sandbox, runs as root: it drops to `uid` for good
        # (the parent-death signal, which a change of uid clears, is set again) and execs the rest
        inside = [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                  "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
                  "--pdeathsig=SIGKILL", "--"] + inside
    return command + inside + (argv or [sys.executable, "-I", str(RUNNER_INSIDE)])


def _folders_on_the_way(destinations, mounts=()):
    """The folders above the `destinations` that bwrap must make, outermost first: not those
    inside another destination (a bind shows the real folders there) nor the empty `mounts`
    (tmpfs) themselves, but those inside such a mount (a checkout under /tmp: /tmp/fresh)."""
    binds, empty = [Path(d) for d in destinations], [Path(m) for m in mounts]
    folders = []
    for destination in destinations:
        for folder in reversed(Path(destination).parents):
            if folder != Path("/") and folder not in folders and folder not in empty \
                    and not any(folder.is_relative_to(b) for b in binds):
                folders.append(folder)
    return folders


def limit_resources(limits, processes=True):
    """A preexec function: `limits` on the process about to exec, and so on all it starts. Not
    the process limit with `processes=False`: bwrap's command sets it inside the sandbox."""
    def preexec():
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        if processes:
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return preexec


# ---------------------------------------------------------------------------------------------
# As root: a uid of the sandbox's own
# ---------------------------------------------------------------------------------------------

class NoSandboxUid(RuntimeError):
    """As root, no uid of SANDBOX_UIDS could be given to a new sandbox."""


def _named_ids():
    """The uids and gids that this machine's passwd, group, subuid and subgid files name (a
    subordinate range as a range)."""
    named = [range(u.pw_uid, u.pw_uid + 1) for u in pwd.getpwall()]
    named += [range(g.gr_gid, g.gr_gid + 1) for g in grp.getgrall()]
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                named.append(range(int(fields[1]), int(fields[1]) + int(fields[2])))
    return named


def processes_of(uid):
    """The PIDs of the processes whose real uid is `uid` (that this process can see)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", "rb") as f:
                status = f.read()
        except OSError:                      # it ended meanwhile
            continue
        uids = status.split(b"\nUid:", 1)[1].split(None, 1)[0] if b"\nUid:" in status else b""
        if uids == str(uid).encode():
            found.append(int(entry.name))
    return found


def end_processes_of(uid, timeout=10.0):
    """Kill every process of `uid` (all of one sandbox's, as root) until none is left, zombies
    included, for at most `timeout` seconds; True when none is."""
    deadline = time.monotonic() + timeout
    while True:
        pids = processes_of(uid)
        if not pids:
            return True
        if time.monotonic() > deadline:
            return False
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):     # not (or no longer) ours to reap
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.01)


PR_SET_CHILD_SUBREAPER = 36


@functools.lru_cache(maxsize=None)
def adopt_orphans():
    """Make this process the reaper of the orphans of what it starts (prctl
    PR_SET_CHILD_SUBREAPER): a sandbox process left without its parent (bwrap killed on a
    time-out) comes to this process, which reaps it at once (`end_processes_of`), instead of to
    the machine's init, which may reap it late or never and so keep its uid in use. Once per
    process; False where the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


@contextlib.contextmanager
def own_uid():
    """As root: a uid for one sandbox, from SANDBOX_UIDS, that no name on this machine and no
    other sandbox uses, held (an exclusive lock on its file in UID_LOCKS, released by the kernel
    if this process dies) until every process that ran as it is gone. Not as root: None (bwrap
    makes a user namespace, and the code runs as the grader's uid outside it)."""
    if os.geteuid() != 0:
        yield None
        return
    try:
        UID_LOCKS.mkdir(mode=0o700, exist_ok=True)
    except OSError as err:
        raise NoSandboxUid(f"{UID_LOCKS} cannot be made ({err})") from err
    folder = os.lstat(UID_LOCKS)
    if not stat.S_ISDIR(folder.st_mode) or folder.st_uid != 0 or folder.st_mode & 0o022:
        raise NoSandboxUid(f"{UID_LOCKS} is not a folder that only root may write to")
    named = _named_ids()
    for uid in SANDBOX_UIDS:
        if any(uid in ids for ids in named):
            continue
        lock = os.open(UID_LOCKS / str(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                       0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:            # another sandbox's
            os.close(lock)
            continue
        if processes_of(uid) and not end_processes_of(uid):   # left by a grader that died
            os.close(lock)
            continue
        try:
            yield uid
        finally:
            end_processes_of(uid)
            os.close(lock)
        return
    raise NoSandboxUid(f"all {len(SANDBOX_UIDS)} sandbox uids are taken")


# ---------------------------------------------------------------------------------------------
# Starting, probing and running the sandbox
# ---------------------------------------------------------------------------------------------

class Sandboxed(NamedTuple):
    process: subprocess.Popen      # bwrap; stdout and stderr are pipes
    uid: int | None                # the sandbox's own uid (as root), else None


@functools.lru_cache(maxsize=None)
def root_builds():
    """As root: whether bwrap may build the sandbox as root, without a user namespace (it needs
    CAP_SYS_ADMIN, which the root of a container may lack). Probed once per process."""
    with own_uid() as uid:
        try:
            done = subprocess.run(bwrap_command(Limits(), ["/bin/true"], uid),
                                  capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
    return done.returncode == 0


@contextlib.contextmanager
def sandboxed(limits=Limits(), argv=None, stdin=subprocess.DEVNULL, **popen):
    """`argv` (default: the runner) running in the sandbox, with `limits`: a `Sandboxed`. On
    leaving, every process it started has ended."""
    with own_uid() as uid:
        if uid is not None:
            adopt_orphans()
        if uid is not None and not root_builds():     # drop to `uid` first: bwrap as that user
            command, popen = bwrap_command(limits, argv), {**popen, "user": uid, "group": uid,
                                                            "extra_groups": []}
        else:
            command = bwrap_command(limits, argv, uid)
        process = start(command, limits, stdin=stdin, processes=False, **popen)
        try:
            yield Sandboxed(process, uid)
        finally:
            _kill_group(process)


PROBE = ("import importlib.util\n"
         f"open({str(RUNNER_INSIDE)!r}, 'rb').close()\n"
         "for name in ('numpy', 'torch'):\n"
         "    found = importlib.util.find_spec(name)\n"
         "    assert found, f'cannot import {name}'\n"
         "    open(found.origin, 'rb').close()\n")
ROOT_HINT = ("as root, the sandbox runs as a uid of its own, which must be able to read Python, "
             "the virtual environment and the course's runner: let all users read them (chmod -R "
             "o+rX), or grade as an ordinary user")


@functools.lru_cache(maxsize=None)
def problem():
    """None if the sandbox starts here, else why not and what to do (probed once per process)."""
    for tool in (BWRAP, PRLIMIT) + ((SETPRIV,) if os.geteuid() == 0 else ()):
        if not os.path.exists(tool):
            return f"the grading sandbox needs {tool}, which is missing: {INSTALL_HINT}"
    try:
        with sandboxed(argv=[sys.executable, "-I", "-c", PROBE]) as (process, uid):
            _, stderr = process.communicate(timeout=60)
    except NoSandboxUid as err:
        return f"the grading sandbox has no uid of its own to run as, as root: {err}"
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"the grading sandbox did not start ({err}): {INSTALL_HINT}"
    if process.returncode != 0:
        why = (stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        unreadable = "Permission denied" in why or not why.startswith("bwrap:")
        hint = ROOT_HINT if uid is not None and unreadable else INSTALL_HINT
        return f"the grading sandbox did not start ({why}): {hint}"
    return None


def run(messages, timeout, limits=Limits(), unsafe=False):
    """Run the runner under the sandbox (or, `unsafe`, without it) for at most `timeout` seconds,
    sending it `messages` (bytes) one at a time: the next only once it has answered the last.
    Returns when it, and everything it started, has ended."""
    if not unsafe:
        with sandboxed(limits, stdin=subprocess.PIPE) as (process, _):
            return _converse(process, messages, timeout, limits)
    scratch = tempfile.mkdtemp(prefix="medsight-unsafe-")
    try:
        env = {"PATH": "/usr/bin:/bin", "HOME": scratch, "OMP_NUM_THREADS": "1"}
        process = start([sys.executable, "-I", str(RUNNER)], limits, stdin=subprocess.PIPE,
                        cwd=scratch, env=env)
        return _converse(process, messages, timeout, limits)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _converse(process, messages, timeout, limits):
    """Send `messages` to the started runner, one at a time, and read its answers; then end it."""
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
    _end(process, finished=len(answers) == len(messages) and not too_large)
    for stream in (process.stdin, process.stdout, process.stderr):
        try:
            stream.close()
        except OSError:
            pass
    return Run(answers, stderr.decode(errors="replace"), process.returncode, timed_out,
               too_large)


def frame(data):
    """`data` with its 8-byte length in front (runner.read_frame reads it)."""
    return struct.pack(">Q", len(data)) + data


def start(command, limits=Limits(), stdin=subprocess.DEVNULL, processes=True, **popen):
    """Start `command` with `limits` (the process limit too, unless `processes=False`), in a
    session of its own."""
    return subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=limit_resources(limits, processes), **popen)


END_GRACE_S = 2.0      # for a runner to end by itself at the end of its input


def _end(process, finished=False):
    """End the runner. After a conversation that went to its end, the runner ends at the end of
    its input and bwrap, its parent, reaps it: no process is killed and none is orphaned.
    Otherwise (a time-out, a flood) bwrap's group is killed; as root, what it leaves behind comes
    to this process (`adopt_orphans`), and `own_uid` kills and reaps it."""
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    if finished:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=END_GRACE_S)
    _kill_group(process)


def _kill_group(process):
    """Kill the runner's process group and wait for it: bwrap's death takes the sandbox's PID
    namespace, and so every process in it, along (--die-with-parent)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
