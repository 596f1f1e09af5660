"""Every command the README and docs/ show is exercised by a test, or says what it needs that CI has not.

A row of HOW names the test that runs the command (as written, or with only its host, port or file paths
changed) or what it needs (hub access, a GPU, a cluster...). A command no row covers fails here, and so does
a row whose test is gone or which no command matches any more: the table cannot drift from the docs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from tests.support.docs_commands import doc_commands
from tests.support.processes import REPO_ROOT


@dataclass(frozen=True)
class RunBy:
    """Run by this test ("path::name")."""

    id: str


@dataclass(frozen=True)
class Needs:
    """Not run in CI: it needs this."""

    what: str


DEMO = "tests/e2e/test_demo.py"
DOCS_CLI = "tests/integration/test_docs_cli_commands.py"
HUB = Needs("hub access to download the brief's checkpoints (and a GPU to be useful)")
CLUSTER = Needs("a Kubernetes cluster and an image registry (the chart's manifests run in tests/deploy)")

# First match wins.
HOW: list[tuple[str, RunBy | Needs]] = [
    (r"^make demo$", RunBy(f"{DEMO}::test_the_banner_says_which_model_is_real")),
    (r"^make test$", Needs("itself: it is what CI runs (.ci/run)")),
    (r"^curl .*localhost:2000/", RunBy(f"{DEMO}::test_the_docs_curl_commands_answer_as_shown")),
    (
        r"^\.venv/bin/proxyvision serve --models-config configs/demo",
        RunBy(f"{DEMO}::test_the_banner_says_which_model_is_real"),
    ),
    (r"^source \.venv/bin/activate$", RunBy(f"{DOCS_CLI}::test_the_cli_help_after_activating_the_venv")),
    (r"^proxyvision serve --help$", RunBy(f"{DOCS_CLI}::test_the_cli_help_after_activating_the_venv")),
    (r"^proxyvision config --m ", RunBy(f"{DOCS_CLI}::test_config_resolves_the_brief_form_without_loading")),
    (r"^proxyvision config --models-config ", RunBy(f"{DOCS_CLI}::test_config_output_is_a_models_yaml_serve_accepts")),
    (r"^make run MODELS_CONFIG=path/to/models\.yaml$", RunBy(f"{DOCS_CLI}::test_make_run_is_serve_on_port_2000")),
    (r"(--m mistralai/|configs/brief\.models\.yaml|--device cuda)", HUB),
    (
        r"^RUST_LOG=info proxyvision --models-config models\.yaml --log$",
        RunBy("tests/unit/launcher/test_plan.py::test_log_level_precedence"),
    ),
    (
        r"^python -m services\.\w+ .*--tls-",
        RunBy("tests/integration/test_tls.py::test_a_real_engine_and_gateway_over_mtls"),
    ),
    (r"^PROXYVISION_TLS_CA=", RunBy("tests/integration/test_tls.py::test_a_real_engine_and_gateway_over_mtls")),
    # tests/support/processes.start_service runs each service by this command line, on free ports.
    (
        r"^python -m services\.(text_engine|api_gateway) ",
        RunBy("tests/e2e/test_text_chat.py::test_brief_text_only_curl_verbatim"),
    ),
    (
        r"^python -m services\.vision_engine ",
        RunBy("tests/integration/test_vision_engine_grpc.py::test_grpcurl_lists_describes_and_streams_describe"),
    ),
    (
        r"--api-key sk-team-a --api-key",
        RunBy("tests/unit/gateway/test_auth.py::test_the_launcher_passes_keys_to_the_gateway_in_its_environment"),
    ),
    (r"^PROXYVISION_API_KEY=", RunBy("tests/unit/gateway/test_auth.py::test_cli_beats_env_beats_models_yaml")),
    (
        r"^grpcurl -plaintext -d .*[\w.]+:50052 proxyvision\.v1\.VisionEngine/Describe$",
        RunBy("tests/integration/test_vision_engine_grpc.py::test_grpcurl_lists_describes_and_streams_describe"),
    ),
    (
        r"^grpcurl -plaintext (127\.0\.0\.1|localhost):50051 ",
        RunBy("tests/integration/test_text_engine_grpc.py::test_grpcurl_lists_describes_and_checks_health"),
    ),
    (
        r"^grpcurl -plaintext -d .* (127\.0\.0\.1|localhost):50051 ",
        RunBy("tests/integration/test_text_engine_grpc.py::test_grpcurl_streams_generate"),
    ),
    (r"^grpcurl -cacert ", RunBy("tests/integration/test_tls.py::test_a_real_engine_and_gateway_over_mtls")),
    (r"^(docker|kubectl|helm) ", CLUSTER),
    (r"^make image ", Needs("docker and an image registry")),
    (r"^make gpu-wheels", Needs("a download of 50 MiB of wheels from PyPI, made by hand before a GPU run")),
    (r"^make gpu-check$", Needs("an NVIDIA GPU (docs/benchmarks.md has its results)")),
    (
        r"^export (ANTHROPIC|CLAUDE)_|^claude$",
        Needs("Claude Code; its protocol is tested with the anthropic SDK (tests/e2e/protocols)"),
    ),
]


def _how(command: str) -> RunBy | Needs | None:
    return next((how for pattern, how in HOW if re.search(pattern, command)), None)


def test_every_docs_command_is_tested_or_says_what_it_needs():
    uncovered = [f"{c.where}: {c.text}" for c in doc_commands() if _how(c.text) is None]
    assert not uncovered, "add a test (or a Needs) to HOW for:\n" + "\n".join(uncovered)


def test_every_row_matches_a_command_in_the_docs():
    commands = [c.text for c in doc_commands()]
    stale = [pattern for pattern, _ in HOW if not any(re.search(pattern, c) for c in commands)]
    assert not stale, f"rows no docs command matches any more: {stale}"


@pytest.mark.parametrize("test_id", sorted({how.id for _, how in HOW if isinstance(how, RunBy)}))
def test_every_named_test_exists(test_id):
    path, name = test_id.split("::")
    source = (REPO_ROOT / path).read_text(encoding="utf-8")
    assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{test_id} is not a test"


def test_the_parser_joins_what_a_shell_would():
    commands = {c.where: c.text for c in doc_commands()}
    # A backslash-continued command is one command; a JSON body over two lines stays inside its quotes.
    assert commands["README.md:40"].startswith("curl http://localhost:2000/v1/chat/completions -H")
    assert commands["README.md:40"].endswith('"max_tokens": 100}\'')
    responses = next(c for c in commands.values() if "/v1/responses" in c)
    assert responses.endswith('"What is the capital of France?"}\'') and "\n" in responses
