"""Where a `backend: vllm` engine runs: the Python interpreter that has vLLM.

vLLM lives in its own venv (`make install-vllm` builds .venv-vllm; pyproject.toml says why), so the launcher
starts the engines of `backend: vllm` models with that venv's python, and everything else with its own. In
an image built for vLLM, the launcher's own python has vLLM and is used. PROXYVISION_VLLM_PYTHON overrides both.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from .config import ConfigError

VLLM_PYTHON_ENV = "PROXYVISION_VLLM_PYTHON"
# The venv `make install-vllm` builds, beside the project's own (a source checkout or editable install).
PROJECT_VLLM_PYTHON = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
INSTALL_HINT = "run `make install-vllm`, or set PROXYVISION_VLLM_PYTHON to a python that has vLLM and ProxyVision"


def has_vllm(python: str) -> bool:
    """Whether `python` can import vLLM (and our engine: both are needed to serve)."""
    if python == sys.executable:
        return importlib.util.find_spec("vllm") is not None
    try:
        probe = subprocess.run(
            [
                python,
                "-c",
                "import importlib.util as u, sys; "
                "sys.exit(not (u.find_spec('vllm') and u.find_spec('services.text_engine')))",
            ],
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def vllm_python(environ: Mapping[str, str] | None = None) -> str:
    """The interpreter for `backend: vllm` engines; ConfigError (one line, with the fix) when there is none."""
    environ = os.environ if environ is None else environ
    configured = environ.get(VLLM_PYTHON_ENV)
    if configured:
        if has_vllm(configured):
            return configured
        raise ConfigError(f"{VLLM_PYTHON_ENV}={configured} cannot import vLLM and ProxyVision's engine: {INSTALL_HINT}")
    for python in (sys.executable, str(PROJECT_VLLM_PYTHON)):
        if Path(python).exists() and has_vllm(python):
            return python
    raise ConfigError(f"backend: vllm needs vLLM, which is not installed: {INSTALL_HINT}")
