"""A non-editable install (a wheel built from the repository, installed into a fresh venv) runs the main job,
``ipsb demo``, from an empty folder: the configs and the trained toy stages ship inside the package.

About 30 s on two cores: pip builds the wheel in an isolated environment (it fetches the build backend
that pyproject.toml names from the package index, as any ``pip install .`` does); the venv borrows this
interpreter's installed dependencies instead of downloading them."""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "ipsb", "lightning_configs")


def _run(cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_wheel_install_runs_the_demo_from_an_empty_folder(tmp_path):
    src = tmp_path / "src"                      # a copy: building writes build/ and *.egg-info next to setup.py
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "wheel", src])
    wheel = next((tmp_path / "wheel").glob("ipsb-*.whl"))

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # the dependencies (torch, lightning, ...) come from this interpreter's site-packages, added as a plain
    # path: its own .pth files (an editable ipsb's finder among them) are not run
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_ipsb_test_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel])

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = _run([python, "-c", "import ipsb; print(ipsb.__file__)"], cwd=empty, env=env).stdout.strip()
    assert Path(where).is_relative_to(site), where         # the installed copy, not the repository
    demo = _run([venv / "bin" / "ipsb", "demo", "--fast", "--tile", "32"], cwd=empty, env=env)
    assert "ipsb demo done" in demo.stdout
    out = empty / "outputs" / "demo"
    assert (out / "grid.png").is_file() and (out / "ffpp_toy.md").is_file() and (out / "ffpp_toy.json").is_file()
    assert sorted(p.name for p in empty.iterdir()) == ["outputs"]
