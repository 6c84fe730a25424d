"""A hostile class: each submission attacks the grader from its answer cells (the attacks of issue
14, built on the student edition) while its other answers are honest; one grading run grades them
all beside an honest submission, whose row must come out exactly right. The run passes
--grade-no-policy, so that every attack reaches the sandbox instead of being refused by the static
answer policy: what is tested is the sandbox, not the deny-list (the `attrgetter` route passes the
policy anyway). Then the sandbox itself is inspected from outside: namespaces, limits, what it can
see."""

import csv
import errno
import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from medsight_lab.grading import EXERCISES, sandbox
from medsight_lab.grading.release import student_notebook
from medsight_lab.grading.runner import pack

ROOT = Path(__file__).resolve().parents[1]
LOSS = ROOT / "notebooks" / "03_loss.ipynb"
TIMEOUT_S = 6
MARK = "medsight-attack-" + hashlib.sha256(str(time.time()).encode()).hexdigest()[:8]

# Without bubblewrap a developer's machine skips these; CI (which installs it) must run them, so
# there a sandbox that cannot start fails instead of hiding every attack test behind a skip.
pytestmark = pytest.mark.skipif(sandbox.problem() is not None and not os.environ.get("CI"),
                                reason=f"no sandbox here: {sandbox.problem()}")

HONEST = {
    "shifted_cross_entropy": (
        "def shifted_cross_entropy(logits, token_ids, pad_id=0):\n"
        "    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),\n"
        "                           token_ids[:, 1:].reshape(-1), ignore_index=pad_id)\n"),
    "grounding_loss": (
        "def grounding_loss(attn_weights, finding_masks):\n"
        "    avg = attn_weights[-1].mean(1)\n"
        "    rows = finding_masks.sum(-1) > 0\n"
        "    if not rows.any():\n"
        "        return avg.sum() * 0.0\n"
        "    m = finding_masks[rows]\n"
        "    return F.binary_cross_entropy(avg[rows].clamp(1e-6, 1 - 1e-6),\n"
        "                                  m / (m.sum(-1, keepdim=True) + 1e-6))\n"),
    "attention_entropy": (
        "def attention_entropy(attn_weights):\n"
        "    p = attn_weights[-1].mean(1)\n"
        "    return -(p * (p + 1e-8).log()).sum(-1).mean()\n"),
    "compute_loss": (
        "def compute_loss(logits, token_ids, attn_weights, finding_masks,\n"
        "                 lambda_ground=0.1, lambda_entropy=0.01):\n"
        "    ce = shifted_cross_entropy(logits, token_ids)\n"
        "    ground = grounding_loss(attn_weights, finding_masks)\n"
        "    entropy = attention_entropy(attn_weights)\n"
        "    return ce + lambda_ground * ground + lambda_entropy * entropy, ce, ground, entropy\n"),
}
FULL = {e: EXERCISES[e].points for e in HONEST}


def _leak(expression):
    """An answer for shifted_cross_entropy that evaluates `expression` once, in its cell, and
    shows the result (or the error it raised) through the only channel left: its own verdict."""
    return ("try:\n"
            f"    found = {expression}\n"
            "except BaseException as err:\n"
            "    found = 'BLOCKED ' + type(err).__name__\n"
            "def shifted_cross_entropy(logits, token_ids, pad_id=0):\n"
            "    raise RuntimeError(str(found)[:150])\n")


# (answers that replace the honest ones, what the test expects of each attacked exercise)
ATTACKS = {
    # -- full marks without an answer: introspection routes --------------------------------
    "gc_walk": {"shifted_cross_entropy": (
        "import gc\n"
        "def shifted_cross_entropy(logits, token_ids, pad_id=0):\n"
        "    for o in gc.get_objects():      # the reference or a judge, anywhere in the process\n"
        "        if callable(o) and getattr(o, '__name__', '') in ('shifted_cross_entropy',\n"
        "                '_judge', 'judge') and o is not shifted_cross_entropy:\n"
        "            return o(logits, token_ids, pad_id)\n"
        "        if type(o) is dict and 'shift_logits' in str(o.get('helpers', '')):\n"
        "            namespace = {'F': F, 'torch': torch}   # the reference's source, if sent\n"
        "            exec(o['helpers'][0], namespace)\n"
        "            return namespace['shifted_cross_entropy'](logits, token_ids, pad_id)\n"
        "    return logits.sum() * 0\n")},
    "frame_walk": {"grounding_loss": (
        "import sys\n"
        "def grounding_loss(attn_weights, finding_masks):\n"
        "    frame = sys._getframe(1)\n"
        "    while frame is not None:          # an `expected` in a caller's frame\n"
        "        if 'expected' in frame.f_locals:\n"
        "            return frame.f_locals['expected']\n"
        "        frame = frame.f_back\n"
        "    return attn_weights[-1].sum() * 0\n")},
    "class_walk": {"attention_entropy": (
        "def attention_entropy(attn_weights):\n"
        "    sys = [c for c in ().__class__.__mro__[1].__subclasses__()\n"
        "           if c.__name__ == 'catch_warnings'][0]()._module.sys\n"
        "    for name, module in list(sys.modules.items()):   # the package, if loaded\n"
        "        if name.startswith('medsight_lab'):\n"
        "            return module.attention_entropy(attn_weights)\n"
        "    try:\n"
        "        return __import__('medsight_lab').attention_entropy(attn_weights)\n"
        "    except ImportError:\n"
        "        return attn_weights[-1].sum() * 0\n")},
    "attrgetter": {"compute_loss": (            # within the policy: names as strings
        "import typing\n"
        "def compute_loss(logits, token_ids, attn_weights, finding_masks,\n"
        "                 lambda_ground=0.1, lambda_entropy=0.01):\n"
        "    get = typing.operator.attrgetter\n"
        "    modules = get('modules')(get('sys')(typing))\n"
        "    for name in ('medsight_lab.loss', 'medsight_lab', '__main__'):\n"
        "        found = modules.get(name)\n"
        "        if found is not None and hasattr(found, 'compute_loss'):\n"
        "            return get('compute_loss')(found)(logits, token_ids, attn_weights,\n"
        "                                              finding_masks)\n"
        "    z = logits.sum() * 0\n"
        "    return z, z, z, z\n")},
    "forged_result": {"compute_loss": (
        "import os, io, json, struct, numpy as np\n"
        "def compute_loss(logits, token_ids, attn_weights, finding_masks,\n"
        "                 lambda_ground=0.1, lambda_entropy=0.01):\n"
        "    buf = io.BytesIO()           # a frame claiming success, sent down every channel\n"
        "    np.savez(buf, _json=np.frombuffer(json.dumps({'defined': True, 'cases': []})\n"
        "             .encode(), dtype=np.uint8))\n"
        "    frame = struct.pack('>Q', len(buf.getvalue())) + buf.getvalue()\n"
        "    for fd in range(0, 64):\n"
        "        try:\n"
        "            os.write(fd, frame)\n"
        "        except OSError:\n"
        "            pass\n"
        "    z = logits.sum() * 0\n"
        "    return z, z, z, z\n")},
    "pickle_route": {"grounding_loss": (
        "import torch, pickle, io\n"
        "class Evil:\n"
        "    def __reduce__(self):\n"
        "        return (exec, ('import os; os.system(\"touch /tmp/" + MARK + "-pickle\")',))\n"
        "torch.save(Evil(), '/tmp/evil.pt')\n"
        "def grounding_loss(attn_weights, finding_masks):\n"
        "    return Evil()                 # an object, not data: the grader must not unpickle\n")},
    # -- secrets: the instructor notebook, the hidden cases, another submission, the grader ---
    "read_instructor": {"shifted_cross_entropy": _leak(f"open({str(LOSS)!r}).read()")},
    "read_hidden": {"shifted_cross_entropy": _leak(
        f"open({str(ROOT / 'instructor' / 'hidden_cases.py')!r}).read()")},
    "read_other": {"shifted_cross_entropy": _leak(      # where submissions are, and anywhere
        "[open(p).read() for p in sum((__import__('glob').glob(f'{d}/*honest*') for d in "
        "['SUBMISSIONS', 'STAGING', '/job', '/tmp', '.', '/']), [])] or 'nothing'")},
    "read_grader": {"shifted_cross_entropy": _leak(
        "open(f'/proc/{__import__(\"os\").getppid()}/cmdline').read()")},
    # -- tampering: the gradebook after exit, pycache, the reference, the package -------------
    "tamper": {"attention_entropy": (
        "import os, time\n"
        f"TARGETS = [{str(ROOT / 'notebooks' / '03_loss.ipynb')!r},\n"
        f"           {str(ROOT / 'medsight_lab' / 'grading' / '__pycache__' / 'x.pyc')!r},\n"
        f"           {str(ROOT / 'medsight_lab' / 'grading' / 'checks.py')!r}]\n"
        "TARGETS += [os.path.join(p, '__pycache__', 'evil.pyc') for p in __import__('sys').path]\n"
        "for target in TARGETS:\n"
        "    try:\n"
        "        open(target, 'a').write('poison')\n"
        "    except OSError:\n"
        "        pass\n"
        "if os.fork() == 0:               # a daemon that waits for the gradebook to exist\n"
        "    os.setsid()\n"
        "    for _ in range(200):\n"
        "        for p in ['GRADEBOOK']:\n"
        "            try:\n"
        "                open(p, 'w').write('=1+1,tampered')\n"
        "            except OSError:\n"
        "                pass\n"
        "        time.sleep(0.1)\n"
        "    os._exit(0)\n"
        + HONEST["attention_entropy"])},
    # -- network ---------------------------------------------------------------------------
    "network": {"grounding_loss": (
        "import socket, urllib.request\n"
        "for attempt in (lambda: socket.create_connection(('127.0.0.1', PORT), timeout=1),\n"
        "                lambda: urllib.request.urlopen('http://127.0.0.1:PORT/', timeout=1)):\n"
        "    try:\n"
        "        attempt()\n"
        "    except Exception:\n"
        "        pass\n"
        + HONEST["grounding_loss"])},
    # -- denial of service -----------------------------------------------------------------
    "kill_grader": {"shifted_cross_entropy": (
        "import os, signal\n"
        "for pid in (os.getppid(), 1, -1):\n"
        "    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n"
        "    except OSError:\n"
        "        pass\n"
        + HONEST["shifted_cross_entropy"])},
    "flood": {"attention_entropy": (
        "import os, sys\n"
        "for _ in range(64):                        # 64 MB down stdout and stderr\n"
        "    os.write(1, b'x' * (1 << 20))\n"
        "    print('y' * (1 << 20), file=sys.stderr)\n"
        "def attention_entropy(attn_weights):\n"
        "    return torch.zeros(20_000_000)          # 80 MB of output to read back\n")},
    "memory": {"shifted_cross_entropy": _leak(
        "'ALLOCATED ' + str(torch.empty(3 << 30, dtype=torch.uint8).numel())")},
    "big_file": {"shifted_cross_entropy": _leak(
        f"[open(p, 'wb').write(b'x' * (200 << 20)) for p in ('/tmp/{MARK}', 'big.bin')]")},
    "fork_bomb": {"shifted_cross_entropy": (
        "import os, time\n"
        "children, found = 0, 'FORKED 1000'\n"
        "try:\n"
        "    while children < 1000:              # far beyond the sandbox's process limit\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        children += 1\n"
        "except OSError as err:\n"
        "    found = f'STOPPED errno {err.errno} after {children} children'\n"
        "def shifted_cross_entropy(logits, token_ids, pad_id=0):\n"
        "    raise RuntimeError(found)\n")},
    "detached": {"grounding_loss": (
        "import os\n"
        "for _ in range(20):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            os.execv('/bin/sleep', ['sleep', '61.25'])\n"
        "        os._exit(0)\n"
        + HONEST["grounding_loss"])},
}

# What each attacked exercise scores (0 where the attack replaced the answer) and words its
# verdict must contain; every other exercise of the submission is honest and earns full marks.
EXPECTED = {
    "gc_walk": ("shifted_cross_entropy", 0, "wrong value"),
    "frame_walk": ("grounding_loss", 0, "wrong value"),
    "class_walk": ("attention_entropy", 0, "wrong value"),
    "attrgetter": ("compute_loss", 0, "wrong"),
    "forged_result": ("compute_loss", 0, ("wrong", "could not be read back", "no result")),
    "pickle_route": ("grounding_loss", 0, "expected a torch tensor"),
    "read_instructor": ("shifted_cross_entropy", 0, "BLOCKED FileNotFoundError"),
    "read_hidden": ("shifted_cross_entropy", 0, "BLOCKED FileNotFoundError"),
    "read_other": ("shifted_cross_entropy", 0, "RuntimeError on a batch without padding: nothing"),
    "read_grader": ("shifted_cross_entropy", 0, "BLOCKED FileNotFoundError"),
    "tamper": ("attention_entropy", 1, "✔ attention_entropy"),
    "network": ("grounding_loss", 2, "✔ grounding_loss"),
    "kill_grader": ("shifted_cross_entropy", 2, "✔ shifted_cross_entropy"),
    "flood": ("attention_entropy", 0, ("too large", "stopped the process")),
    "memory": ("shifted_cross_entropy", 0, "BLOCKED"),
    "big_file": ("shifted_cross_entropy", 0, "BLOCKED OSError"),
    "fork_bomb": ("shifted_cross_entropy", 0, f"STOPPED errno {errno.EAGAIN} after"),
    "detached": ("grounding_loss", 2, "✔ grounding_loss"),
}


def submission(answers):
    """The student edition of chapter 3 with `answers` filled in (honest ones elsewhere)."""
    nb = student_notebook(nbformat.read(LOSS, as_version=4), LOSS.name)
    for cell in nb.cells:
        exercise = cell.metadata.get("nbgrader", {}).get("grade_id")
        if exercise in HONEST and cell.cell_type == "code":
            cell.source = {**HONEST, **answers}[exercise]
    return nb


@pytest.fixture(scope="module")
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    contacts, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                contacts.append(server.accept())
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], contacts
    stop.set()
    thread.join()
    server.close()


@pytest.fixture(scope="module")
def attacked(tmp_path_factory, listener):
    port, contacts = listener
    base = tmp_path_factory.mktemp("attacks")
    folder, out = base / "submissions", base / "grades"
    folder.mkdir()
    honest = submission({})
    questions = next(c for c in honest.cells
                     if c.metadata.get("nbgrader", {}).get("grade_id") == "03_loss_questions")
    questions.source = "SECRET_OF_HONEST: padding costs nothing."
    nbformat.write(honest, folder / "honest.ipynb")
    gradebook = out / "gradebook.csv"
    for name, answers in ATTACKS.items():
        answers = {e: s.replace("PORT", str(port)).replace("GRADEBOOK", str(gradebook))
                   .replace("SUBMISSIONS", str(folder)).replace("STAGING", str(out / ".staging"))
                   for e, s in answers.items()}
        nbformat.write(submission(answers), folder / f"{name}.ipynb")
    # Intake attacks: a conftest.py, a symbolic link to the reference, a formula as a name.
    (folder / "conftest.py").write_text(f"open('/tmp/{MARK}-conftest', 'w').write('imported')\n")
    (folder / "link.ipynb").symlink_to(LOSS)
    nbformat.write(honest, folder / "=cmd|'calc'!A0.ipynb")
    (folder / "folder.ipynb").mkdir()
    reference_before = hashlib.sha256(LOSS.read_bytes()).hexdigest()
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "medsight_lab.grading.plugin", "--grade",
         str(folder), "--grade-output", str(out), "--grade-timeout", str(TIMEOUT_S), "-q",
         "-p", "no:cacheprovider", "--grade-no-policy", "-n", "2"], cwd=ROOT,
        capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    written = gradebook.read_bytes()
    time.sleep(2)                     # a daemon that outlived the run would write now
    with open(gradebook, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {"run": run, "rows": rows, "out": out, "contacts": list(contacts),
            "grades": {(r["submission"], r["exercise"]): (int(r["points"]), r["verdict"])
                       for r in rows},
            "written": written, "gradebook": gradebook, "seconds": seconds,
            "reference_unchanged": hashlib.sha256(LOSS.read_bytes()).hexdigest()
            == reference_before}


def test_the_honest_submission_is_graded_exactly(attacked):
    for exercise, points in FULL.items():
        got, verdict = attacked["grades"][("honest.ipynb", exercise)]
        assert got == points and verdict.startswith(f"✔ {exercise}: correct on "), verdict
        assert f"✔ {exercise} (hidden tests)" in verdict


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_attack_fails_and_costs_only_its_own_exercise(attacked, name):
    exercise, points, words = EXPECTED[name]
    got, verdict = attacked["grades"][(f"{name}.ipynb", exercise)]
    words = (words,) if isinstance(words, str) else words
    assert got == points and any(w in verdict for w in words), verdict
    for other, full in FULL.items():
        if other != exercise:
            got, verdict = attacked["grades"][(f"{name}.ipynb", other)]
            assert got == full, (name, other, verdict)


def test_no_secret_reaches_the_gradebook_or_feedback(attacked):
    texts = [attacked["gradebook"].read_text(encoding="utf-8")] + [
        p.read_text(encoding="utf-8") for p in (attacked["out"] / "feedback").iterdir()]
    for text in texts:
        for secret in ("BEGIN SOLUTION", "SECRET_OF_HONEST", "_hidden_", "hidden_cases",
                       "--grade", "pytest", "shift_logits"):
            assert secret not in text, secret


def test_tampering_changes_nothing(attacked):
    assert attacked["reference_unchanged"]
    assert attacked["gradebook"].read_bytes() == attacked["written"]
    assert not list((ROOT / "medsight_lab").rglob("evil.pyc"))
    assert not (ROOT / "medsight_lab" / "grading" / "__pycache__" / "x.pyc").exists()
    assert b"poison" not in (ROOT / "medsight_lab" / "grading" / "checks.py").read_bytes()
    assert not Path(f"/tmp/{MARK}-pickle").exists()


def test_intake_refuses_what_is_not_a_notebook_file(attacked):
    grades = attacked["grades"]
    assert not Path(f"/tmp/{MARK}-conftest").exists()          # never imported
    assert "not a Jupyter notebook" in grades[("conftest.py", "-")][1]
    assert "symbolic link" in grades[("link.ipynb", "-")][1]
    assert "a folder" in grades[("folder.ipynb", "-")][1]
    # the formula-looking name is made safe, and graded like the honest copy it is
    safe = [s for s, _ in grades if "calc" in s]
    assert safe == ["cmd__calc__A0.ipynb"] * len(FULL), safe
    for exercise, points in FULL.items():
        assert grades[(safe[0], exercise)][0] == points
    for line in attacked["gradebook"].read_text(encoding="utf-8").splitlines():
        for cell in next(csv.reader([line])):
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), cell
            assert not (cell.startswith("-") and cell != "-"), cell


def test_the_network_and_the_processes_are_gone(attacked):
    assert attacked["contacts"] == []                     # nothing reached 127.0.0.1
    left = subprocess.run(["pgrep", "-f", "sleep 61.25"], capture_output=True, text=True)
    assert left.stdout.strip() == "", "a detached process outlived the grading run"
    assert not Path(f"/tmp/{MARK}").exists()                # the big file never left the sandbox


def test_the_run_survives_and_stays_quick(attacked):
    assert attacked["run"].returncode == 1, attacked["run"].stdout[-3000:]    # failures only
    submissions = len(ATTACKS) + 2
    assert len(attacked["rows"]) == submissions * len(FULL) + 3
    # loose: flood and timeouts included, on a loaded 2-core machine
    assert attacked["seconds"] < 40 * submissions


# -- the sandbox seen from outside -------------------------------------------------------------

AS_ROOT = os.geteuid() == 0


def _sandboxed(code, limits=sandbox.Limits()):
    """A context: `code` running in the sandbox, a `sandbox.Sandboxed` (process, uid)."""
    return sandbox.sandboxed(limits, argv=[sys.executable, "-I", "-c", code])


def _ns(pid, kind):
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def _inner(process, marker, timeout=20):
    """The PID of the sandboxed python (bwrap's child, once setpriv and prlimit have exec'd it)
    whose command line holds `marker`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        for pid in children.read_text().split() if children.exists() else []:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0] == sys.executable.encode() and marker in b" ".join(argv):
                return int(pid)
        time.sleep(0.05)
    raise AssertionError("the sandboxed process did not start")


def _soft(pid, name):
    """A soft limit of process `pid`, as /proc shows it."""
    table = Path(f"/proc/{pid}/limits").read_text().splitlines()
    return next(line.split()[-3] for line in table if line.startswith(name))


def test_namespaces_and_limits_from_outside():
    limits = sandbox.Limits()
    with _sandboxed("import time; time.sleep(20)", limits) as (process, uid):
        inner = _inner(process, b"time.sleep")
        for kind in ("net", "pid", "ipc", "uts"):
            assert _ns(inner, kind) != _ns(os.getpid(), kind), kind
        status = Path(f"/proc/{inner}/status").read_text()
        field = {line.split(":")[0]: line.split(":", 1)[1].split()
                 for line in status.splitlines() if ":" in line}
        assert field["NSpid"][-1] == "1"                                  # PID 1 inside
        for caps in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            assert field[caps] == ["0000000000000000"], caps
        if AS_ROOT:
            # a uid of its own, no groups, no capabilities left to gain, no new privileges
            assert uid in sandbox.SANDBOX_UIDS
            assert field["Uid"] == field["Gid"] == [str(uid)] * 4
            assert field["Groups"] == [] and field["NoNewPrivs"] == ["1"]
            assert field["CapBnd"] == ["0000000000000000"]
        else:
            assert uid is None and _ns(inner, "user") != _ns(os.getpid(), "user")
            uid_map = Path(f"/proc/{inner}/uid_map").read_text().split()
            assert uid_map[0] == "65534" and uid_map[2] == "1"   # one unprivileged uid inside
        assert _soft(inner, "Max address space") == str(limits.memory_bytes)
        assert _soft(inner, "Max processes") == str(limits.processes)
        assert _soft(inner, "Max file size") == str(limits.file_bytes)
        assert _soft(inner, "Max cpu time") == str(limits.cpu_s)
        # The process limit is set inside the sandbox, not on bwrap: an ordinary user's bwrap
        # with it would cap all the user's processes together (the test after next).
        assert _soft(process.pid, "Max processes") != str(limits.processes)
    for _ in range(100):                    # the kernel tears the namespace down
        if not Path(f"/proc/{inner}").exists():
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{inner}").exists()
    if AS_ROOT:
        assert sandbox.processes_of(uid) == []              # nothing left behind as its uid


# A python that forks until the kernel refuses, keeps its children, and says how far it got on
# its first line; then waits for its stdin to close.
FORK_BOMB = ("import os, sys, time\n"
             "children, error = 0, None\n"
             "try:\n"
             "    while children < 1000:\n"
             "        if os.fork() == 0:\n"
             "            time.sleep(60)\n"
             "            os._exit(0)\n"
             "        children += 1\n"
             "except OSError as err:\n"
             "    error = err.errno\n"
             "print(children, error, flush=True)\n"
             "sys.stdin.read()\n")
FORKS = ("import os, sys, time\n"          # 20 children at once, each alive for a second
         "pids = []\n"
         "for _ in range(20):\n"
         "    pid = os.fork()\n"
         "    if pid == 0:\n"
         "        time.sleep(1)\n"
         "        os._exit(0)\n"
         "    pids.append(pid)\n"
         "print(len(pids), flush=True)\n")


def _first_line(process, timeout=60):
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "no line from the sandbox"
    return process.stdout.readline().decode().split()


@pytest.mark.skipif(not AS_ROOT, reason="the process limit is the grader's own when not root")
def test_as_root_a_fork_bomb_is_stopped_and_another_sandbox_still_forks():
    """Linux exempts uid 0 from the process limit, and counts processes per uid: each sandbox
    runs as a uid of its own, so a fork bomb meets the limit (EAGAIN), and a sandbox running
    beside it, while the bomb holds every process it may have, still forks."""
    limits = sandbox.Limits()
    command = [sys.executable, "-I", "-c"]
    with sandbox.sandboxed(limits, argv=command + [FORK_BOMB], stdin=subprocess.PIPE) as bomb:
        children, error = _first_line(bomb.process)
        assert (int(children), error) == (limits.processes - 1, str(errno.EAGAIN))
        with sandbox.sandboxed(limits, argv=command + [FORKS]) as beside:
            assert _first_line(beside.process) == ["20"]
        assert beside.uid != bomb.uid
        assert len(sandbox.processes_of(bomb.uid)) == limits.processes    # still holding them
        bomb.process.stdin.close()
    assert sandbox.processes_of(bomb.uid) == sandbox.processes_of(beside.uid) == []


@pytest.mark.skipif(not AS_ROOT or not os.path.exists("/usr/bin/python3"),
                    reason="as root only; Debian's python stands in for root's")
def test_as_a_root_that_may_not_make_namespaces_the_uid_is_dropped_before_bwrap(monkeypatch):
    """A container's root may lack CAP_SYS_ADMIN: the sandbox then drops to its own uid before
    bwrap, which makes a user namespace as for an ordinary user; the limit holds all the same.
    That uid must reach what bwrap mounts: Debian's python stands in for root's here."""
    monkeypatch.setattr(sandbox, "root_builds", lambda: False)
    monkeypatch.setattr(sandbox, "_ro_binds", lambda: [Path("/usr")])
    limits = sandbox.Limits()
    python = ["/usr/bin/python3", "-I", "-S", "-c"]
    with sandbox.sandboxed(limits, python + [FORK_BOMB], stdin=subprocess.PIPE) as bomb:
        assert _first_line(bomb.process) == [str(limits.processes - 1), str(errno.EAGAIN)]
        with sandbox.sandboxed(limits, python + [FORKS]) as beside:
            assert _first_line(beside.process) == ["20"]
        maps = {Path(f"/proc/{pid}/uid_map").read_text().split()[0]
                for pid in sandbox.processes_of(bomb.uid)}
        assert maps == {"0", "65534"}        # bwrap outside as the uid; the bomb as 65534 inside
        bomb.process.stdin.close()
    assert sandbox.processes_of(bomb.uid) == sandbox.processes_of(beside.uid) == []


@pytest.mark.skipif(not AS_ROOT, reason="stands in for an ordinary user: needs root to do so")
def test_as_an_ordinary_user_the_limit_is_each_sandboxs_own(monkeypatch):
    """An ordinary grader: the limit is set inside the sandbox's user namespace, whose processes
    the kernel counts on their own: two fork bombs each get the whole limit, whatever else the
    grader runs (here, more processes than the limit). Root stands in for the user: the command is
    bwrap's for a non-root grader, run as a free sandbox uid with 70 processes of its own, and
    Debian's python (the user cannot read root's)."""
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no /usr/bin/python3")
    monkeypatch.setattr(sandbox, "_ro_binds", lambda: [Path("/usr")])
    limits = sandbox.Limits()
    command = sandbox.bwrap_command(limits, ["/usr/bin/python3", "-I", "-S", "-c", FORK_BOMB])
    with sandbox.own_uid() as user:

        def as_the_user():
            os.setgroups([])
            os.setresgid(user, user, user)
            os.setresuid(user, user, user)
            sandbox.limit_resources(limits, processes=False)()     # as sandbox.sandboxed() does

        others = [subprocess.Popen(["/bin/sleep", "60"], preexec_fn=as_the_user)
                  for _ in range(limits.processes + 6)]
        bombs = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, preexec_fn=as_the_user)
                 for _ in range(2)]
        try:
            for bomb in bombs:
                assert _first_line(bomb) == [str(limits.processes - 1), str(errno.EAGAIN)]
        finally:
            sandbox.end_processes_of(user)
            for process in others + bombs:
                process.wait()


@pytest.mark.skipif(not AS_ROOT, reason="uids of their own only as root")
def test_a_sandbox_uid_is_nobody_elses(monkeypatch):
    first, second = sandbox.SANDBOX_UIDS[0], sandbox.SANDBOX_UIDS[1]
    with sandbox.own_uid() as uid:
        with sandbox.own_uid() as other:                      # taken: the next free one
            assert uid != other and {uid, other} <= set(sandbox.SANDBOX_UIDS)
    monkeypatch.setattr(sandbox, "_named_ids", lambda: [range(first, second + 1)])
    with sandbox.own_uid() as uid:                            # a name on this machine: skipped
        assert uid not in (first, second)
    assert os.stat(sandbox.UID_LOCKS).st_mode & 0o777 == 0o700


@pytest.mark.skipif(not AS_ROOT, reason="uids of their own only as root")
def test_as_root_grading_refuses_when_the_sandbox_uid_cannot_read_the_course(tmp_path,
                                                                             monkeypatch):
    private = tmp_path / "runner.py"
    private.write_text(sandbox.RUNNER.read_text())
    private.chmod(0o600)                                    # root's alone
    monkeypatch.setattr(sandbox, "RUNNER", private)
    sandbox.problem.cache_clear()
    try:
        why = sandbox.problem()
    finally:
        sandbox.problem.cache_clear()
    assert "PermissionError" in why and "chmod -R o+rX" in why, why


# The repository's own folder may appear (empty) when the virtualenv lives inside it, as
# scripts/setup.sh makes it: bwrap creates the mount point's parents. What is in it must not.
HIDDEN_FROM_SANDBOX = [str(ROOT / "notebooks"), str(ROOT / "instructor"), str(ROOT / "README.md"),
                       str(ROOT / "medsight_lab"), "/proc/1", str(Path.home() / ".ssh")]


def test_what_the_sandbox_can_see():
    code = ("import json, os, sys\n"
            "try:\n"
            "    import medsight_lab\n"
            "    package = medsight_lab.__file__ or str(medsight_lab.__path__)\n"
            "except ImportError:\n"
            "    package = None\n"
            f"paths = {HIDDEN_FROM_SANDBOX!r}\n"
            "def writable(p):\n"
            "    try:\n"
            "        open(os.path.join(p, 'w.tmp'), 'w').close()\n"
            "        return True\n"
            "    except OSError:\n"
            "        return False\n"
            "print(json.dumps({'package': package, 'uid': os.getuid(),\n"
            "                  'seen': [p for p in paths if os.path.exists(p)],\n"
            f"                  'root': sorted(os.listdir({str(ROOT)!r})) if os.path.isdir({str(ROOT)!r}) else [],\n"
            "                  'writable': [p for p in ['/', '/usr', '/dev', sys.prefix, '/tmp']\n"
            "                               if writable(p)]}))\n")
    with _sandboxed(code) as (process, uid):
        out, err = process.communicate(timeout=60)
    seen = json.loads(out)
    assert seen["package"] is None, seen             # the editable install does not resolve
    assert seen["uid"] == (uid if AS_ROOT else 65534)
    assert seen["seen"] == [], seen["seen"]
    assert set(seen["root"]) <= {".venv"}, seen["root"]      # at most the venv's mount point
    assert seen["writable"] == ["/tmp"], seen["writable"]


def test_without_the_sandbox_grading_refuses_unless_told(tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    nbformat.write(submission({}), folder / "alice.ipynb")
    command = [sys.executable, "-m", "pytest", "-p", "medsight_lab.grading.plugin", "--grade",
               str(folder), "--grade-output", str(tmp_path / "grades"), "-q",
               "-p", "no:cacheprovider"]
    env = {**os.environ, "MEDSIGHT_BWRAP": str(tmp_path / "no-bwrap")}
    refused = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 4, refused.stdout + refused.stderr       # a usage error
    assert "apt-get install -y bubblewrap" in refused.stderr
    assert "--grade-unsafe" in refused.stderr
    assert not (tmp_path / "grades" / "gradebook.csv").exists()
    unsafe = subprocess.run(command + ["--grade-unsafe"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert unsafe.returncode == 0, unsafe.stdout[-3000:]
    assert "UNSAFE: --grade-unsafe" in (tmp_path / "grades" / "run_log.txt").read_text()
    with open(tmp_path / "grades" / "gradebook.csv", newline="", encoding="utf-8") as f:
        assert {r["exercise"]: int(r["points"]) for r in csv.DictReader(f)} == FULL


@pytest.mark.parametrize("answer", [
    b"", b"garbage", pack([1, 2], {}), pack({"defined": True, "cases": "x"}, {}),
    pack({"defined": True, "cases": [{"status": "ok", "out": {"tensor": "nope"}}]}, {}),
    pack({"defined": True, "cases": []}, {}),            # claims success, gives no result
])
def test_a_forged_or_mangled_result_fails_without_crashing(answer):
    from medsight_lab.grading.checks import cases
    from medsight_lab.grading.running import Settings, verdict_of
    suites = [(s, cases("attention_entropy", s)) for s in ("visible", "hidden")]
    passed, verdict = verdict_of("attention_entropy", answer, suites, Settings())
    assert not passed and verdict.startswith("✘ attention_entropy"), verdict


def test_a_failure_of_the_course_code_is_not_blamed_on_the_student():
    from medsight_lab.grading.checks import cases
    from medsight_lab.grading.running import Settings, verdict_of
    from medsight_lab.grading.runner import run_exercise
    tree, _ = run_exercise({"helpers": ["import scipy_that_is_not_there"], "answer": "",
                            "function": "f", "cases": []}, "import torch", {}, 1.0)
    suites = [(s, cases("compute_loss", s)) for s in ("visible", "hidden")]
    passed, verdict = verdict_of("compute_loss", pack(tree, {}), suites, Settings())
    assert not passed and verdict.startswith("not graded: the course's own code"), verdict
