"""`pip install .` (the README's way into a user's own environment): the wheel that
scikit-build-core builds from pyproject.toml holds the package and its extension, and,
unpacked away from the build tree, imports, compiles a module and differentiates it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from conftest import BUILD, EXAMPLES, ROOT


def test_wheel_installs_and_runs_outside_the_build_tree(tmp_path):
    wheels = tmp_path / "wheels"
    # No build isolation: the venv's pinned scikit-build-core and nanobind, no download.
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                    "--no-build-isolation", "--quiet", "-w", str(wheels)],
                   check=True, capture_output=True, text=True,
                   env=dict(os.environ, SKBUILD_BUILD_DIR=str(tmp_path / "skbuild")))
    (wheel,) = wheels.glob("miras-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("miras/_core") and n.endswith(".so") for n in names), names
    assert "miras/__init__.py" in names and "miras/_ops.py" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = f"""
import miras, torch
assert miras.__file__.startswith({str(site)!r}), miras.__file__
m = miras.compile({str(EXAMPLES / "deltanet.miras")!r}, D=8)
q = torch.randn(1, 5, 2, 8, requires_grad=True)
k = torch.nn.functional.normalize(torch.randn(1, 5, 2, 8), dim=-1)
o, state = m(q, k, torch.randn(1, 5, 2, 8), eta=torch.full((1, 5, 2), 0.3))
o.sum().backward()
assert q.grad.abs().sum() > 0 and state["W"].shape == (1, 2, 8, 8)
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=str(site), MIRAS_MIRASC=str(BUILD / "bin" / "mirasc"),
               MIRAS_CACHE_DIR=str(tmp_path / "cache"))
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
