"""scripts/gpu_check.sh installs, beside a bare GPU machine's torch, the wheels nbval needs. The
list is written by hand, so check it against the dependency metadata of this environment: every
package that nbval, ipykernel and ipywidgets need on Linux CPython 3.12 must be in it, unless the
machine's own stack (torch, numpy, matplotlib, tqdm, pytest) already brings it."""

import importlib.metadata as metadata
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
DEVICE = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def _name(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots):
    """The packages `roots` need at run time on the device, by name, themselves included."""
    seen, todo = set(), list(roots)
    while todo:
        name = _name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed here: cannot read its dependencies")
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({**DEVICE, "extra": ""}):
                todo.append(requirement.name)
    return seen


def test_the_wheel_list_covers_what_nbval_needs():
    listed = re.search(r"PACKAGES=\(([^)]*)\)", SCRIPT.read_text()).group(1).split()
    needed = closure(["nbval", "ipykernel", "ipywidgets"])
    on_the_machine = closure(["torch", "numpy", "matplotlib", "tqdm", "pytest"])
    missing = needed - on_the_machine - {_name(n) for n in listed}
    assert not missing, f"add to PACKAGES in scripts/gpu_check.sh: {sorted(missing)}"
