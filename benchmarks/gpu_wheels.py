"""`make gpu-wheels`: the pinned wheels the GPU check installs on a machine without network (.gpu-wheels/).

The closure is read from this venv (the project's pinned resolution): pyproject's runtime dependencies, the
openai SDK and jinja2 (chat templates), and everything they require, at the versions installed here. Left
out: torch and numpy (the machine's own, see gpu_bootstrap.py) and what only torch pulls in (nvidia-*, triton,
setuptools). Wheels are fetched with
`pip download --no-deps --only-binary=:all:` for manylinux x86_64 and each CPython in --pythons, and the
folder's size is checked against what the device tool carries (64 MiB for all carried paths).
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .gpu_bootstrap import MACHINE_PACKAGES, REPO_ROOT, REQUIREMENTS, WHEELS_DIR

EXTRA_ROOTS = ("openai", "jinja2")
LEFT_OUT = {*MACHINE_PACKAGES, "triton", "setuptools"}
PLATFORMS = (
    "manylinux_2_31_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_12_x86_64",
    "manylinux2010_x86_64",
    "manylinux_2_5_x86_64",
    "manylinux1_x86_64",
)
MIB = 1024 * 1024
CARRY_LIMIT_MIB = 64


def closure() -> dict[str, str]:
    """name -> installed version of the runtime dependencies and all they need (markers evaluated here)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(spec) for spec in project["dependencies"]] + [Requirement(name) for name in EXTRA_ROOTS]
    found: dict[str, str] = {}
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found or name in LEFT_OUT or name.startswith("nvidia-"):
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        dist = metadata.distribution(name)
        found[name] = dist.version
        todo += [Requirement(spec) for spec in dist.requires or []]
    return dict(sorted(found.items()))


def download(pins: dict[str, str], out: Path, pythons: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / REQUIREMENTS).write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    for python in pythons:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            *platforms,
            "--python-version",
            python,
            "--implementation",
            "cp",
            "--dest",
            str(out),
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(out / REQUIREMENTS),
        ]
        print(f"pip download for CPython {python} ...", flush=True)
        subprocess.run(command, check=True, timeout=900)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(WHEELS_DIR))
    parser.add_argument("--pythons", default="3.12", help="CPython versions of the GPU machine, e.g. '3.11 3.12'")
    parser.add_argument("--limit-mib", type=float, default=CARRY_LIMIT_MIB, help="fail above this folder size")
    args = parser.parse_args()
    out = Path(args.out)
    pins = closure()
    download(pins, out, args.pythons.replace(",", " ").split())
    wheels = sorted(out.glob("*.whl"), key=lambda p: p.stat().st_size, reverse=True)
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    largest = ", ".join(f"{p.name.split('-')[0]} {p.stat().st_size / MIB:.1f}" for p in wheels[:4])
    print(f"{len(pins)} pinned packages, {len(wheels)} wheels in {out}: {size / MIB:.1f} MiB (largest: {largest})")
    if size > args.limit_mib * MIB:
        print(
            f"error: {size / MIB:.1f} MiB is over {args.limit_mib:g} MiB (what the device tool carries); "
            "name fewer --pythons",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
