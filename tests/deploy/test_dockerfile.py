"""The Dockerfile, without a Docker engine (there is none here): hadolint finds nothing, the image's
conventions hold (non-root numeric user, CUDA torch by default with a CPU build arg, the entrypoints the
chart runs exist), its two scripted build steps work when run here, and .dockerignore sends exactly
what the build copies."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support.processes import REPO_ROOT

from .chart import main_container, render, value_sets

DOCKERFILE = REPO_ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        result.append((keyword.upper(), rest.strip()))
        pending = ""
    return result


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            out.append([])
        if out:
            out[-1].append((keyword, rest))
    return out


def run_step(prefix: str) -> str:
    """The one RUN command of the build stage that starts with `prefix`."""
    (command,) = [rest for keyword, rest in stages()[0] if keyword == "RUN" and rest.startswith(prefix)]
    return command


def test_hadolint_finds_nothing():
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_base_image_torch_index_and_non_root_user():
    args = dict(rest.split("=", 1) for keyword, rest in instructions() if keyword == "ARG" and "=" in rest)
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cu128"  # CUDA by default
    assert "--build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu" in DOCKERFILE.read_text()
    build, final = stages()
    assert [rest for keyword, rest in build if keyword == "FROM"] == ["${PYTHON_IMAGE} AS build"]
    assert final[0] == ("FROM", "${PYTHON_IMAGE}")
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users == ["10001:10001"]  # numeric: Kubernetes' runAsNonRoot can verify it
    # The chart's pod security context runs as that same user.
    pod = render().of_kind("Deployment")[0]["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (10001, 10001)
    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    assert "HF_HOME=/var/cache/proxyvision/huggingface" in env and "PYTHONPATH=/app" in env
    assert ("VOLUME", '["/var/cache/proxyvision"]') in final


def test_every_entrypoint_the_chart_runs_is_a_module_of_the_image():
    copied = [rest.split()[-2:] for keyword, rest in stages()[1] if keyword == "COPY"]
    assert ["/src/services", "/app/services"] in copied
    modules = set()
    for values in value_sets().values():
        for deployment in render(values).of_kind("Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            for container in [main_container(deployment), *pod.get("initContainers", [])]:
                assert container["command"][:2] == ["python", "-m"]
                modules.add(container["command"][2])
    assert modules == {
        "services.api_gateway",
        "services.text_engine",
        "services.vision_engine",
        "services.model_builder",
    }
    for module in modules:
        assert (REPO_ROOT / module.replace(".", "/") / "__main__.py").is_file(), module


def test_the_requirement_step_reads_pyproject_s_pins(tmp_path):
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    command = run_step("python -c")
    subprocess.run(
        ["bash", "-c", command.replace("python -c", f"{sys.executable} -c", 1)], cwd=tmp_path, check=True, timeout=60
    )
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert (tmp_path / "requirements.txt").read_text().split() == project["dependencies"]
    torch = [d for d in project["dependencies"] if d.startswith("torch==")]
    assert (tmp_path / "torch.txt").read_text().split() == torch == ["torch==2.13.0"]
    tools = (tmp_path / "tools.txt").read_text().split()
    assert (
        len(tools) == 1
        and tools[0].startswith("grpcio-tools==")
        and tools[0] in project["optional-dependencies"]["dev"]
    )
    # torch comes from TORCH_INDEX, everything else from the default index.
    install = run_step("python -m venv /opt/venv")
    assert '--index-url "${TORCH_INDEX}" -r torch.txt' in install and "pip install -r requirements.txt" in install


def test_the_grpc_code_step_generates_importable_modules(tmp_path):
    shutil.copytree(REPO_ROOT / "protos", tmp_path / "protos")
    (tmp_path / "services" / "common").mkdir(parents=True)
    for package in ("services", "services/common"):
        (tmp_path / package / "__init__.py").touch()
    command = run_step("rm -rf services/common/pb").replace("/opt/tools/bin/python", sys.executable)
    subprocess.run(["bash", "-c", command], cwd=tmp_path, check=True, timeout=120)
    generated = tmp_path / "services" / "common" / "pb" / "proxyvision" / "v1"
    assert {p.name for p in generated.glob("*_pb2_grpc.py")} == {
        "common_pb2_grpc.py",
        "text_engine_pb2_grpc.py",
        "vision_engine_pb2_grpc.py",
    }
    probe = (
        "from services.common.pb.proxyvision.v1 import text_engine_pb2_grpc, vision_engine_pb2_grpc; "
        "print(text_engine_pb2_grpc.TextEngineStub.__name__, vision_engine_pb2_grpc.VisionEngineStub.__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.stdout.split() == ["TextEngineStub", "VisionEngineStub"], result.stderr


def _dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matches a path or any of its parents."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        regex = "^" + re.escape(body).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]") + "$"
        if any(re.match(regex, candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_sends_what_the_build_copies_and_nothing_else():
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [rest.split()[:-1] for keyword, rest in stages()[0] if keyword == "COPY"]
    for source in (s for group in sources for s in group):
        assert not _dockerignore_excludes(source.rstrip("/"), patterns), source
    for path in (
        "services/api_gateway/static/index.html",
        "services/text_engine/__main__.py",
        "protos/proxyvision/v1/common.proto",
    ):
        assert (REPO_ROOT / path).exists() and not _dockerignore_excludes(path, patterns), path
    for path in (
        ".venv/bin/python",
        "models/tiny/ministral-3-tiny/model.safetensors",
        ".git/config",
        "tests/conftest.py",
        "services/common/pb/proxyvision/v1/common_pb2.py",
        "services/text_engine/__pycache__/server.cpython-311.pyc",
        "deploy/k8s/values.yaml",
        "README.md",
    ):
        assert _dockerignore_excludes(path, patterns), path
