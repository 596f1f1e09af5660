"""The GPU check's first step: what this machine has, and the project's pinned packages where it lacks them.

Standard library only: it runs before anything of ours can be imported. A GPU machine brings its own CUDA
torch (never replaced: its build matches the driver) and numpy (the one that torch was built against);
every other runtime dependency must be the version pyproject.toml pins. When one is missing or another
version, the check makes `.gpu-venv` (`--system-site-packages`, plus a .pth naming this interpreter's own
site directories, so a torch installed in a venv or conda env stays visible too), installs the pinned wheels
there from `.gpu-wheels/` (`make gpu-wheels`, carried to the machine) with `pip --no-index`, and runs itself
again under that venv's Python. Nothing is fetched from the network.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: say so instead of a traceback
    raise SystemExit(
        f"the GPU check needs Python >= 3.11 (pyproject's requires-python); this is {sys.version.split()[0]}"
    ) from None

REPO_ROOT = Path(__file__).resolve().parents[1]
WHEELS_DIR = REPO_ROOT / ".gpu-wheels"
VENV_DIR = REPO_ROOT / ".gpu-venv"
REQUIREMENTS = "requirements.txt"  # in WHEELS_DIR: the full pinned closure the wheels were downloaded for
BOOTSTRAPPED_ENV = "PROXYVISION_GPU_CHECK_BOOTSTRAPPED"
# The machine's own: never installed from the folder (see the module docstring).
MACHINE_PACKAGES = ("torch", "numpy")
PIP_TIMEOUT = 300  # s: installing ~55 local wheels takes well under a minute


class BootstrapError(RuntimeError):
    """The check cannot get the packages it needs; the message says what to do."""


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_requirements() -> dict[str, str]:
    """name -> version of what the check imports: pyproject's runtime pins (minus the machine's packages) and
    the openai SDK the load generator drives (a dev pin)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for spec in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        name, _, version = spec.partition("==")
        name = _canonical(name.strip())
        if name in MACHINE_PACKAGES or (spec in project["optional-dependencies"]["dev"] and name != "openai"):
            continue
        pins[name] = version.strip()
    return pins


def mismatches(pins: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """(name, pinned, installed or None) for every pin this interpreter does not have exactly."""
    wrong = []
    for name, want in pins.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have != want:
            wrong.append((name, want, have))
    return wrong


_TORCH_PROBE = r"""
import json, torch
info = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
try:
    import numpy
    info["numpy"] = numpy.__version__
except ImportError:
    info["numpy"] = None
if info["cuda_available"]:
    free, total = torch.cuda.mem_get_info()
    info.update(device_name=torch.cuda.get_device_name(0), capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                device_count=torch.cuda.device_count(), total_mib=total // 2**20, free_mib=free // 2**20)
print(json.dumps(info))
"""


def machine_report(python: str = sys.executable) -> dict:
    """Python, torch, numpy, CUDA device and driver. Torch is asked in a child process: a CUDA context in this
    one would hold GPU memory for the whole run and blur the memory figures."""
    report = {
        "python": platform.python_version(),
        "executable": python,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    try:
        probe = subprocess.run([python, "-c", _TORCH_PROBE], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise BootstrapError("importing torch took over 120 s") from None
    if probe.returncode != 0:
        raise BootstrapError(f"this machine's torch cannot be imported ({python}):\n{probe.stderr[-2000:]}")
    report.update(json.loads(probe.stdout.strip().splitlines()[-1]))
    smi = shutil.which("nvidia-smi")
    if smi:
        query = subprocess.run(
            [smi, "--query-gpu=driver_version,name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        report["nvidia_smi"] = query.stdout.strip() or query.stderr.strip()
    else:
        report["nvidia_smi"] = None
    return report


def _machine_site_dirs() -> list[str]:
    """This interpreter's site directories (system, venv or conda env alike): where its torch lives."""
    dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    dirs.update(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    return sorted(d for d in dirs if Path(d).is_dir())


def _venv_python() -> Path:
    return VENV_DIR / "bin" / "python"


def _make_venv() -> list[str]:
    """Create .gpu-venv (once) and return the pip command that installs into it."""
    python = _venv_python()
    if not python.exists():
        made = subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", str(VENV_DIR)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if made.returncode != 0:
            # Debian's python3 without python3-venv has no ensurepip: a venv without pip, filled by our pip.
            shutil.rmtree(VENV_DIR, ignore_errors=True)
            subprocess.run(
                [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(VENV_DIR)],
                check=True,
                capture_output=True,
                timeout=120,
            )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    # After the venv's own site-packages on sys.path, so the pinned versions installed there win.
    Path(purelib, "proxyvision_machine_site.pth").write_text("\n".join(_machine_site_dirs()) + "\n")
    has_pip = subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True, timeout=60).returncode == 0
    if has_pip:
        return [str(python), "-m", "pip"]
    return [sys.executable, "-m", "pip", "--python", str(python)]


def install_pinned(wrong: list[tuple[str, str, str | None]]) -> Path:
    """Install the pinned closure from WHEELS_DIR into .gpu-venv; returns the venv's Python."""
    requirements = WHEELS_DIR / REQUIREMENTS
    if not requirements.exists():
        names = ", ".join(f"{n}=={w} (have {h or 'none'})" for n, w, h in wrong)
        raise BootstrapError(
            f"missing or other versions: {names}; and no {requirements.relative_to(REPO_ROOT)}. Run `make gpu-wheels` "
            "where the package index is reachable and bring .gpu-wheels/ to this machine (the device tool: "
            'carry=[".gpu-wheels", "services/common/pb"])'
        )
    pip = _make_venv()
    # --no-deps: the file is the whole pinned closure already, and resolving would also re-check the machine's
    # torch against its own requirements (a setuptools or sympy pin the folder does not carry).
    command = [
        *pip,
        "install",
        "--isolated",
        "--no-index",
        "--no-deps",
        "--find-links",
        str(WHEELS_DIR),
        "--disable-pip-version-check",
        "--quiet",
        "-r",
        str(requirements),
    ]
    print(
        f"bootstrap: installing {len(wrong)} pinned package(s) from {WHEELS_DIR.name}/ into {VENV_DIR.name}/ "
        f"({', '.join(n for n, _, _ in wrong)})",
        flush=True,
    )
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BootstrapError(f"pip install from {WHEELS_DIR} took over {PIP_TIMEOUT} s") from None
    if done.returncode != 0:
        tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
        raise BootstrapError(
            f"pip install --no-index from {WHEELS_DIR} failed (this Python is {tag}; the folder "
            f"must hold its wheels: make gpu-wheels GPU_PYTHONS=...):\n{done.stderr[-3000:]}"
        )
    return _venv_python()


def ensure_packages(module: str, argv: list[str]) -> dict:
    """Return the machine report when every pin is importable here; otherwise install them and re-run
    `python -m module argv` under .gpu-venv's Python (this call then never returns)."""
    report = machine_report()
    wrong = mismatches(pinned_requirements())
    report["bootstrap"] = "not needed: every pinned package is installed" if not wrong else None
    if not wrong:
        if os.environ.get(BOOTSTRAPPED_ENV):
            report["bootstrap"] = f"installed into {VENV_DIR.name}/ from {WHEELS_DIR.name}/"
        return report
    if os.environ.get(BOOTSTRAPPED_ENV):
        names = ", ".join(f"{n}=={w} (have {h or 'none'})" for n, w, h in wrong)
        raise BootstrapError(f"still missing after installing from {WHEELS_DIR}: {names}")
    python = install_pinned(wrong)
    sys.stdout.flush()
    os.execve(str(python), [str(python), "-m", module, *argv], {**os.environ, BOOTSTRAPPED_ENV: "1"})
    raise AssertionError("unreachable")  # execve does not return
