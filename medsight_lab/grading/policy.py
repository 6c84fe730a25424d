"""What an answer cell may contain, decided by reading it (the cell is parsed, never run).

Used by the grader (a refused answer scores zero, with the reason as its verdict) and by `check`
in the student's notebook (so that the student learns before handing in that an answer the check
passed would be refused).
"""

from __future__ import annotations

import ast
import symtable

# What an answer cell may do. An answer computes with tensors; it has no business importing the
# package, patching other objects or reaching the process and its files. The rules are static (the
# cell is parsed, not run) and aim at mistakes and the known shortcuts with as few false refusals
# as possible. They are a first filter that names a rule; what contains an answer is the grading
# sandbox (sandbox.py; "What the sandbox protects" in the grader guide).
ALLOWED_IMPORTS = {"__future__", "collections", "functools", "itertools", "math", "numpy",
                   "random", "sys", "torch", "typing", "warnings"}
FORBIDDEN_NAMES = {"breakpoint", "compile", "delattr", "eval", "exec", "get_ipython", "getattr",
                   "globals", "open", "setattr", "vars"}
# Attributes that lead out of the answer: to other modules, frames, builtins and hooks, or files.
FORBIDDEN_ATTRIBUTES = {
    "builtins", "ctypes", "importlib", "os", "shutil", "signal", "subprocess", "sys",     # modules
    "environ", "modules", "setprofile", "settrace", "addaudithook",                      # sys, os
    "ag_frame", "cr_frame", "f_back", "f_builtins", "f_globals", "f_locals", "gi_frame",
    "tb_frame",                                                                     # frames
    "get_type_hints", "update_wrapper", "wraps", "run_cell",            # eval / patch routes
    "from_file", "fromfile", "genfromtxt", "load", "loadtxt", "memmap", "save", "savetxt",
    "savez", "savez_compressed", "tofile",                                              # files
}


def _python_source(source):
    """The cell as IPython runs it: magics and shell escapes become `get_ipython()` calls."""
    from IPython.core.inputtransformer2 import TransformerManager
    try:
        return TransformerManager().transform_cell(source)
    except Exception:  # IPython cannot read it either: it fails as a syntax error when it runs
        return source


# The names the chapters bind to the package (`import medsight_lab as ml`); the grader reads the
# actual ones from each chapter (`running.package_names`).
PACKAGE_NAMES = frozenset({"medsight_lab", "ml"})


def _function_scopes(python):
    """{(name, line): {symbol: "local" | "global" | "free"}} for every def and lambda of the cell,
    as Python itself resolves them (`symtable`)."""
    scopes = {}

    def visit(table):
        if table.get_type() == "function":
            key = (table.get_name(), table.get_lineno())
            # Two lambdas on one line cannot be told apart: neither gets locals (refuse, not guess).
            scopes[key] = {} if key in scopes else {
                sym.get_name(): "global" if sym.is_global() else "local" if sym.is_local()
                else "free" for sym in table.get_symbols()}
        for child in table.get_children():
            visit(child)

    visit(symtable.symtable(python, "<answer>", "exec"))
    return scopes


def _names_in_scope(tree, scopes):
    """(Name node, the stack of enclosing function scopes, innermost last) for every name."""
    def walk(node, stack):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            # Defaults, annotations and decorators run in the enclosing scope; the body in the
            # function's own.
            args = node.args
            every_arg = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            outer = [*args.defaults, *args.kw_defaults, *getattr(node, "decorator_list", []),
                     getattr(node, "returns", None),
                     *(a.annotation for a in every_arg if a is not None)]
            for child in outer:
                if child is not None:
                    yield from walk(child, stack)
            name = node.name if not isinstance(node, ast.Lambda) else "lambda"
            inner = [*stack, scopes.get((name, node.lineno), {})]
            body = node.body if isinstance(node.body, list) else [node.body]
            for child in body:
                yield from walk(child, inner)
            return
        if isinstance(node, ast.Name):
            yield node, stack
        for child in ast.iter_child_nodes(node):
            yield from walk(child, stack)

    yield from walk(tree, [])


def _is_own_local(name, stack):
    """Whether `name`, read where `stack` says, is a local variable of the answer's own functions
    (then it is not the package, whatever the chapter binds to that name)."""
    for scope in reversed(stack):
        kind = scope.get(name)
        if kind == "local":
            return True
        if kind == "global":
            return False
    return False                      # module level: the chapter's binding


def answer_problem(source, forbidden_names=PACKAGE_NAMES):
    """Why an answer cell's source may not be graded, or None. `forbidden_names`: the names the
    chapter binds to the package."""
    python = _python_source(source)
    if python.count("get_ipython()") > source.count("get_ipython()"):
        return "answer cells must not use IPython magics or shell commands (% or !)"
    try:
        tree = ast.parse(python)
        scopes = _function_scopes(python)
    except SyntaxError:
        return None                    # reported as a syntax error when it runs
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.ImportFrom):      # a relative import has no top package
                modules = ["." * node.level + (node.module or "")]
                names = [a.name for a in node.names]
                bad_name = next((n for n in names if n in FORBIDDEN_ATTRIBUTES | FORBIDDEN_NAMES
                                 or n.startswith("_")), None)
                if bad_name:
                    return f"answer cells must not import `{bad_name}`"
            else:
                modules = [a.name for a in node.names]
            bad = [m for m in modules if m.split(".")[0] not in ALLOWED_IMPORTS]
            if bad and bad[0].split(".")[0] == "medsight_lab":
                return ("answer cells must not import medsight_lab: write the exercise "
                        "yourself with torch")
            if bad:
                return (f"answer cells may import only {', '.join(sorted(ALLOWED_IMPORTS))}; "
                        f"yours imports {bad[0]}")
        elif isinstance(node, ast.Name):
            if node.id in FORBIDDEN_NAMES or node.id.startswith("__"):
                return f"answer cells must not use `{node.id}`"
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_") or node.attr in FORBIDDEN_ATTRIBUTES:
                return f"answer cells must not use the attribute `.{node.attr}`"
            if not isinstance(node.ctx, ast.Load):
                return ("answer cells must not set or delete attributes "
                        f"(`... .{node.attr} = ...`): compute with local variables instead")
        elif isinstance(node, ast.ClassDef):
            return "answer cells define functions, not classes"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                and (node.name in forbidden_names or node.name.startswith("__")):
            return f"answer cells must not define `{node.name}`"
    # A chapter's package name is refused where it means the package: a local variable of the
    # answer's own function that happens to share the name (`pointing_game = ...`) is fine.
    for node, stack in _names_in_scope(tree, scopes):
        if node.id in forbidden_names and not _is_own_local(node.id, stack):
            return (f"answer cells must not use `{node.id}` (the course package or its "
                    "checker): write the exercise yourself with torch")
    return None
