"""The sandboxed runner: calls a student's functions on inputs the grader sends, returns data.

    python -I runner.py        # inside the sandbox (grading/sandbox.py); the job on stdin

This file runs as a plain script in a process that has no `medsight_lab` (the sandbox mounts no
package and no repository), so it imports only the standard library, numpy and torch. The
trusted grader imports it too, for `encode`/`decode`/`pack`/`read_frame`/`projected_gradients`:
one copy of the format on both sides.

Protocol: frames of an 8-byte big-endian length and a `pack`ed npz (`allow_pickle=False`; the
structure as JSON under `_json`, the tensors as arrays). The grader sends one exercise (its
answer cell, the reference answers of the chapter's earlier exercises, the chapter's imports, the
encoded cases, the time limits); the runner forks a child that execs the imports, the reference
answers and then the student's answer cell in a fresh namespace, and calls the student's function
on each case. The child sends back, per case, the output, the inputs as they are after the call
(in-place check) and, for gradient cases, the gradients of a projection of the output whose
weights the grader chose. Nothing is judged here.

Then the runner (PID 1 of the sandbox's PID namespace) kills every other process and empties
/tmp, so nothing one exercise started survives into the next, writes the result, and only then
does the grader send the next exercise. So a child never holds a way to write another exercise's
result, and the only reference code that was ever in the sandbox while an exercise ran is that of
exercises already judged.
"""

from __future__ import annotations

import io
import json
import math
import os
import select
import signal
import struct
import time

import numpy as np
import torch

MAX_ITEMS = 64              # per list/tuple in an output; more is reported as "a list"
MAX_DEPTH = 4
MAX_MESSAGE = 200           # characters of an exception message kept
MAX_RESULT_BYTES = 64 << 20   # one exercise's encoded result
# The exercise's limit is enforced here this much after it, so that a limit the child enforces
# itself (one call, the answer cell), which may be as long, always reports first: the verdict then
# names the cell or the call, the same one in every run, whatever the load.
BACKSTOP_S = 2.0


# ---------------------------------------------------------------------------------------------
# The data format, shared with the grader: plain JSON plus numpy arrays, never pickle
# ---------------------------------------------------------------------------------------------

def encode(value, arrays, prefix, depth=0):
    """A JSON-able description of `value`; its tensors go into `arrays` under keys from `prefix`.
    A `PatchScore` travels as its tensors. Anything else (an object of the student's own making,
    any other function) is described by its type's name, so that nothing decoded runs code of
    the sender's choosing."""
    if isinstance(value, PatchScore):        # a score function, as the data that defines it
        return {"callable": {"name": "patch_score", "args": encode(
            [value.W, value.v, value.scale, value.square], arrays, prefix, depth + 1)}}
    if isinstance(value, torch.Tensor):
        try:
            data = value.detach().cpu()
            if data.dtype == torch.bfloat16 or data.dtype == torch.float16:
                data = data.float()
            array = np.ascontiguousarray(data.numpy())
        except Exception:  # a tensor subclass, a meta tensor, ...: not data the grader can use
            return {"other": type(value).__name__[:40]}
        key = f"{prefix}_{len(arrays)}"
        arrays[key] = array
        return {"tensor": key}
    if isinstance(value, (tuple, list)) and type(value) in (tuple, list):
        if depth >= MAX_DEPTH or len(value) > MAX_ITEMS:
            return {"other": type(value).__name__}
        return {type(value).__name__: [encode(v, arrays, prefix, depth + 1) for v in value]}
    if value is None or type(value) in (bool, int, float):
        if type(value) is int and abs(value) > 2 ** 53:
            return {"other": "int"}
        return {"value": value}
    return {"other": type(value).__name__[:40]}


def decode(obj, arrays):
    """The inverse of `encode`: tensors, tuples, lists, plain values and `PatchScore`s; `Opaque`
    for the rest. Raises ValueError on anything `encode` does not write."""
    if not isinstance(obj, dict) or len(obj) != 1:
        raise ValueError(f"not an encoded value: {str(obj)[:80]}")
    (kind, content), = obj.items()
    if kind == "tensor":
        return torch.from_numpy(np.array(arrays[content]))
    if kind in ("tuple", "list"):
        items = [decode(item, arrays) for item in content]
        return tuple(items) if kind == "tuple" else items
    if kind == "value":
        if content is not None and type(content) not in (bool, int, float):
            raise ValueError(f"not a plain value: {type(content).__name__}")
        return content
    if kind == "callable":         # the one callable family there is; its code is ours
        if not isinstance(content, dict) or set(content) != {"name", "args"} \
                or content["name"] != "patch_score":
            raise ValueError(f"not an encoded score function: {str(content)[:80]}")
        args = decode(content["args"], arrays)
        if not isinstance(args, list) or len(args) != 4:
            raise ValueError("an encoded patch_score has 4 arguments (W, v, scale, square)")
        return PatchScore(*args)
    if kind == "other":
        return Opaque(str(content))
    raise ValueError(f"unknown kind {kind!r}")


class PatchScore:
    """A score of each image's patches, defined by data so that it can cross the sandbox's
    boundary (an exercise that takes a score function gets one of these). For patches P (B, N, D):

        score(P) = sum_n scale[n] * (tanh(P[:, n] @ W) @ v + square * |P[:, n]|^2)   -> (B,)

    with W (D, K), v (K,), scale (N,) and `square` a number. It is smooth, each image's score
    depends on its own patches only, and scale[n] = 0 makes patch n count for nothing."""

    def __init__(self, W, v, scale, square=0.0):
        for name, t, dim in (("W", W, 2), ("v", v, 1), ("scale", scale, 1)):
            if not isinstance(t, torch.Tensor) or t.dim() != dim or not t.is_floating_point():
                raise ValueError(f"PatchScore: {name} must be a {dim}-d float tensor, got "
                                 f"{getattr(t, 'shape', type(t).__name__)}")
        if W.shape[1] != v.shape[0]:
            raise ValueError(f"PatchScore: W (D, K) and v (K,) disagree: {tuple(W.shape)} and "
                             f"{tuple(v.shape)}")
        if type(square) not in (int, float) or not math.isfinite(square):
            raise ValueError(f"PatchScore: square must be a finite number, got {square!r}")
        self.W, self.v, self.scale, self.square = W, v, scale, float(square)

    def __call__(self, patches):
        N, D = self.scale.shape[0], self.W.shape[0]
        if not isinstance(patches, torch.Tensor) or patches.dim() != 3 \
                or tuple(patches.shape[1:]) != (N, D):
            raise ValueError(f"score_fn expects patches of shape (B, {N}, {D}), got "
                             f"{getattr(patches, 'shape', type(patches).__name__)}")
        W, v, scale = (t.to(patches) for t in (self.W, self.v, self.scale))
        per_patch = torch.tanh(patches @ W) @ v + self.square * patches.pow(2).sum(-1)
        return (per_patch * scale).sum(-1)

    def __repr__(self):
        (D, K), N = self.W.shape, self.scale.shape[0]
        return f"PatchScore(N={N}, D={D}, K={K}, square={self.square:g})"


class Opaque:
    """Stands, on the grader's side, for an object the student's function returned that is not
    data (its type's name only)."""

    def __init__(self, type_name):
        self.type_name = type_name


def pack(tree, arrays):
    """One npz file (bytes): the arrays, and `tree` as UTF-8 JSON under `_json`."""
    buffer = io.BytesIO()
    np.savez(buffer, _json=np.frombuffer(json.dumps(tree).encode(), dtype=np.uint8), **arrays)
    return buffer.getvalue()


def unpack(data):
    """(tree, arrays) from `pack`'s bytes; never unpickles."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    return json.loads(arrays.pop("_json").tobytes().decode()), arrays


def tensors(x):
    """The tensors in `x` (a tensor, a PatchScore, or nested tuples/lists), in order."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, PatchScore):           # so that the in-place check sees its weights too
        return [x.W, x.v, x.scale]
    if isinstance(x, (list, tuple)):
        return [t for item in x for t in tensors(item)]
    return []


def projected_gradients(out, inputs, weights):
    """Gradients w.r.t. `inputs` of sum_i <out_i, weights_i> (the grader's fixed random
    projection of every output); None for an input the outputs do not depend on."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    if len(outs) != len(weights) or not all(isinstance(o, torch.Tensor) for o in outs) \
            or any(o.numel() != w.numel() for o, w in zip(outs, weights)):
        return [None] * len(inputs)
    objective = sum((o.reshape(-1).float() * w.reshape(-1).float()).sum()
                    for o, w in zip(outs, weights))
    if not isinstance(objective, torch.Tensor) or not objective.requires_grad:
        return [None] * len(inputs)
    return list(torch.autograd.grad(objective, inputs, allow_unused=True))


# ---------------------------------------------------------------------------------------------
# The child: one exercise

TOO_LARGE = {"runner_error": {"type": "too large", "message": "your function's results are too "
                              "large to read back"}}
# ---------------------------------------------------------------------------------------------

class _TimeUp(BaseException):
    """A BaseException, so that a student's `except Exception` does not swallow it."""


def _on_alarm(signum, frame):
    raise _TimeUp


def _error(err):
    text = str(err).strip().splitlines()
    message = "".join(ch for ch in (text[0] if text else "") if ch.isprintable())
    return {"type": type(err).__name__[:60], "message": message[:MAX_MESSAGE].strip()}


def _call_case(fn, case, arrays, call_limit, prefix, out_arrays):
    args = decode(case["args"], arrays)
    kwargs = dict(zip(case["kwarg_names"], decode(case["kwargs"], arrays)))
    grad_inputs = []
    for index in case["grad_args"]:
        for t in tensors(args[index]):
            if t.is_floating_point():
                t.requires_grad_()
                grad_inputs.append(t)
    signal.setitimer(signal.ITIMER_REAL, call_limit)
    try:
        with torch.enable_grad():
            out = fn(*args, **kwargs)
            grads = None
            if case["projection"] is not None:
                weights = [torch.from_numpy(np.array(arrays[k])) for k in case["projection"]]
                grads = projected_gradients(out, grad_inputs, weights)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return {"status": "ok", "out": encode(out, out_arrays, f"{prefix}o"),
            "args_after": encode(list(args), out_arrays, f"{prefix}a"),
            "grads": None if grads is None else [
                None if g is None else encode(g, out_arrays, f"{prefix}g") for g in grads]}


def run_exercise(exercise, preamble, arrays, call_limit):
    """(tree, arrays) of one exercise's results; runs in the forked child."""
    namespace = {"__name__": "__answer__", "__builtins__": __builtins__}
    try:                  # the course's code: a failure here is not the student's
        exec(compile(preamble, "<chapter imports>", "exec"), namespace)
        for source in exercise["helpers"]:             # the reference answers it may call
            exec(compile(source, "<reference>", "exec"), namespace)
    except Exception as err:  # noqa: BLE001 - reported to the grader as the course's failure
        return {"setup_error": _error(err)}, {}
    result = {"cell_error": None, "cell_timeout": False, "defined": False, "cases": []}
    signal.setitimer(signal.ITIMER_REAL, call_limit)
    try:
        exec(compile(exercise["answer"], "<your answer cell>", "exec"), namespace)
    except _TimeUp:
        result["cell_timeout"] = True
    except (Exception, SystemExit) as err:  # reported; the function may still be defined
        result["cell_error"] = _error(err)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    fn = namespace.get(exercise["function"])
    result["defined"] = callable(fn)
    out_arrays = {}
    if result["defined"] and not result["cell_timeout"]:
        for number, case in enumerate(exercise["cases"]):
            try:
                entry = _call_case(fn, case, arrays, call_limit, f"c{number}", out_arrays)
            except _TimeUp:
                result["cases"].append({"status": "timeout"})
                break                  # the next case would most likely loop too
            except (Exception, SystemExit) as err:  # the student's error is data for the judge
                entry = {"status": "error", "error": _error(err)}
            result["cases"].append(entry)
            if sum(a.nbytes for a in out_arrays.values()) > MAX_RESULT_BYTES:
                return TOO_LARGE, {}
    return result, out_arrays


def _child(exercise, arrays, write_fd):
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):                          # whatever the student prints goes nowhere
        os.dup2(devnull, fd)
    signal.signal(signal.SIGALRM, _on_alarm)
    try:
        tree, out_arrays = run_exercise(exercise, exercise["preamble"], arrays,
                                        exercise["call_limit"])
        data = pack(tree, out_arrays)
    except BaseException as err:  # noqa: BLE001 - e.g. an output that cannot be encoded
        data = pack({"runner_error": _error(err)}, {})
    with os.fdopen(write_fd, "wb") as pipe:
        pipe.write(struct.pack(">Q", len(data)) + data)
    os._exit(0)


def _read_exactly(fd, size, deadline):
    """`size` bytes from `fd`; fewer if it closes first; None past `deadline`."""
    chunks, got = [], 0
    while got < size:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], None if math.isinf(left) else left)
        if not ready:
            continue
        chunk = os.read(fd, min(size - got, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd, deadline=math.inf, limit=MAX_RESULT_BYTES):
    """One length-prefixed frame: bytes, b"" at the end of the stream, "timeout", "too large" or
    "crash" (a stream that ended inside a frame). The sender's length is read first, so a frame
    ends without waiting for the stream to close (a process left behind may hold it open)."""
    head = _read_exactly(fd, 8, deadline)
    if head is None:
        return "timeout"
    if not head:
        return b""
    if len(head) < 8:
        return "crash"
    (size,) = struct.unpack(">Q", head)
    if size > limit:
        return "too large"
    data = _read_exactly(fd, size, deadline)
    if data is None:
        return "timeout"
    return data if len(data) == size else "crash"


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_everything_else():
    """As PID 1 of the sandbox, kill every other process in it (the child and anything it left
    behind, detached or not) and reap them."""
    if os.getpid() == 1:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
    while True:
        try:
            if os.waitpid(-1, 0)[0] == 0:
                break
        except ChildProcessError:
            break


def _empty(folder):
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files + dirs:
            path = os.path.join(root, name)
            try:
                os.rmdir(path) if os.path.isdir(path) and not os.path.islink(path) \
                    else os.unlink(path)
            except OSError:
                pass


def main():
    """Read one exercise at a time from stdin, answer each on stdout. The grader sends the next
    exercise only after this one's result: the reference answers an exercise may call are never
    in this process before every exercise they answer has been judged."""
    torch.set_num_threads(1)   # before any fork: one thread, no pool a child could deadlock on
    out = os.fdopen(os.dup(1), "wb")
    source = os.dup(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)                           # the children inherit no way in or back
    os.dup2(devnull, 1)
    while True:
        message = read_frame(source, limit=1 << 30)
        if not isinstance(message, bytes) or not message:
            break
        exercise, arrays = unpack(message)
        del message
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            os.close(source)
            out.close()
            _child(exercise, arrays, write_fd)
        os.close(write_fd)
        data = read_frame(read_fd, time.monotonic() + exercise["exercise_limit"] + BACKSTOP_S)
        os.close(read_fd)
        if os.getpid() != 1:           # not in a sandbox (--grade-unsafe): the child at least
            _kill(pid)
        _kill_everything_else()
        if os.getpid() == 1:
            _empty("/tmp")
        if data == "timeout":
            data = pack({"exercise_timeout": True}, {})
        elif data == "too large":
            data = pack(TOO_LARGE, {})
        elif not isinstance(data, bytes) or not data:
            data = pack({"runner_error": {"type": "crash", "message": "the process ended "
                                          "without a result"}}, {})
        out.write(struct.pack(">Q", len(data)) + data)
        out.flush()
    out.close()
    os._exit(0)        # everything is written: skip the interpreter's teardown (a third of a second)


if __name__ == "__main__":
    main()
