"""Static checks, run first: yamllint, ansible-lint (production profile), syntax, Python byte-compile."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO


def run(cmd, **kwargs):
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, **kwargs)
    return result.returncode, (result.stdout + result.stderr)[-20000:]


def test_yamllint():
    rc, output = run([sys.executable, "-m", "yamllint", "--strict", "."])
    assert rc == 0, output


def test_ansible_lint_production_profile():
    env = dict(os.environ, NO_COLOR="1")
    rc, output = run([os.path.join(os.path.dirname(sys.executable), "ansible-lint"), "--profile", "production"], env=env)
    assert rc == 0, output


def test_site_playbook_syntax():
    rc, output = run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "--syntax-check", "site.yml"])
    assert rc == 0, output


def python_interpreters():
    """Every Python >= 3.11 on the machine: the controller code must byte-compile on all of them."""
    found = {sys.executable}
    for name in ("python3", "python3.11", "python3.12", "python3.13"):
        path = shutil.which(name)
        if path:
            found.add(path)
    found.update(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[1-9]*/bin/python3")))
    usable = []
    for path in sorted(found):
        probe = subprocess.run([path, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            usable.append(path)
    return usable


@pytest.mark.parametrize("python", python_interpreters())
def test_python_sources_compile(python, tmp_path):
    sources = [p for pattern in ("plugins/**/*.py",
                                 "tools/*.py", "tests/**/*.py", "bench/*.py")
               for p in glob.glob(str(REPO / pattern), recursive=True)]
    code = ("import py_compile, sys\n"
            "for src in sys.argv[1:]:\n"
            "    py_compile.compile(src, cfile=sys.argv[0] + '.pyc', doraise=True)\n")
    script = tmp_path / "compile.py"
    script.write_text(code)
    rc, output = run([python, str(script), *sources])
    assert rc == 0, output
