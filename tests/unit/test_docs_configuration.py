"""docs/configuration.md is hand-written; these tests keep it true to the code.

- Every key of the models.yaml schema (`ModelsConfig`, walked recursively) is in the reference table as a dotted
  path (`models[].params.mem`, `gateway.limits.max_body_bytes`), and every path the table names exists.
- Every environment variable of `services/common/env.py` is in the variables table with its default, and the table
  names no other.
- Every flag of `proxyvision serve`, of the gateway and of the engines is in its command's table, and each table
  names only flags its command has. The parsers are built, never run: no process starts.
- Every relative link of the README and docs/ names a file that exists, and an anchor that one of its headings
  makes (GitHub's rules), so moving a section cannot silently break a link.
"""

from __future__ import annotations

import argparse
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from services.common.config import ModelsConfig
from services.common.env import ENVIRONMENT

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "configuration.md"
TOP_LEVEL = set(ModelsConfig.model_fields)


def schema_paths(model: type[BaseModel], prefix: str = "") -> dict[str, bool]:
    """Every key of `model` as a dotted path -> whether it is a leaf (a list of entries is written `name[]`)."""
    paths: dict[str, bool] = {}
    for name, field in model.model_fields.items():
        inner, is_list = _nested_model(field.annotation)
        path = f"{prefix}{name}"
        if inner is None:
            paths[path] = True
            continue
        node = f"{path}[]" if is_list else path
        paths[node] = False
        paths.update(schema_paths(inner, f"{node}."))
    return paths


def _nested_model(annotation) -> tuple[type[BaseModel] | None, bool]:
    """The pydantic model inside `X`, `X | None`, `list[X]` or `Annotated[...]`, and whether it is a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    is_list = typing.get_origin(annotation) is list
    for arg in typing.get_args(annotation):
        inner, inner_list = _nested_model(arg)
        if inner is not None:
            return inner, is_list or inner_list
    return None, False


def sections(text: str) -> dict[str, str]:
    """Heading text -> the text under it, down to the next heading of any level."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)  # a `# comment` in a code block is no heading
    parts = re.split(r"^(#{1,6} .*)$", text, flags=re.M)
    return {parts[i].lstrip("#").strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def first_cells(text: str) -> list[tuple[str, str]]:
    """(first cell, second cell) of every markdown table row below its header."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or set(line.replace("|", "").strip()) <= {"-", ":", " "}:
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows.append((cells[0], cells[1] if len(cells) > 1 else ""))
    return rows


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


@pytest.fixture(scope="module")
def doc() -> dict[str, str]:
    return sections(DOC.read_text(encoding="utf-8"))


def documented_keys(doc: dict[str, str]) -> set[str]:
    return {
        span
        for cell, _ in first_cells(doc["models.yaml reference"])
        for span in code_spans(cell)
        if re.split(r"[.\[]", span)[0] in TOP_LEVEL
    }


def test_every_models_yaml_key_is_documented(doc):
    documented = documented_keys(doc)
    missing = sorted(path for path, leaf in schema_paths(ModelsConfig).items() if leaf and path not in documented)
    assert not missing, f"docs/configuration.md does not document these models.yaml keys: {missing}"


def test_every_documented_models_yaml_key_exists(doc):
    unknown = sorted(documented_keys(doc) - set(schema_paths(ModelsConfig)))
    assert not unknown, f"docs/configuration.md documents keys the schema does not have: {unknown}"


def test_schema_walk_sees_nested_lists_and_optional_sections():
    paths = schema_paths(ModelsConfig)
    assert paths["models[].params.mem"] and paths["gateway.limits.max_body_bytes"]
    assert paths["models[].capabilities.vision_proxy.shared_cache.url"] and paths["tls.ca"]
    assert not paths["models[]"] and not paths["tls"]


def test_every_environment_variable_is_documented_with_its_default(doc):
    rows = {span: default for cell, default in first_cells(doc["Environment variables"]) for span in code_spans(cell)}
    assert set(rows) == set(ENVIRONMENT), (
        f"missing: {sorted(set(ENVIRONMENT) - set(rows))}, not in env.py: {sorted(set(rows) - set(ENVIRONMENT))}"
    )
    for name, (default, _) in ENVIRONMENT.items():
        if default is not None:
            assert f"`{default}`" in rows[name], f"{name}: env.py says {default!r}, the table {rows[name]!r}"


class _Parsed(Exception):
    """Raised in place of parsing: carries the parser a command built."""


def built_parser(monkeypatch, build) -> argparse.ArgumentParser:
    """The parser `build()` makes, caught at its `parse_args` (nothing is parsed, nothing runs)."""

    def capture(parser, *args, **kwargs):
        raise _Parsed(parser)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", capture)
        with pytest.raises(_Parsed) as caught:
            build()
    return caught.value.args[0]


def long_flags(parser: argparse.ArgumentParser) -> set[str]:
    return {
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }


def launcher_flags() -> set[str]:
    from services.launcher.cli import build_parser

    parser = build_parser()
    (subcommands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return long_flags(subcommands.choices["serve"])


def gateway_flags(monkeypatch) -> set[str]:
    from services.api_gateway.__main__ import parse_args

    return long_flags(built_parser(monkeypatch, lambda: parse_args([])))


def engine_flags(monkeypatch) -> set[str]:
    from services.common.engine_main import parse_args

    return long_flags(built_parser(monkeypatch, lambda: parse_args("text_engine", 50051, [])))


@pytest.mark.parametrize(
    ("heading", "flags"),
    [
        ("`proxyvision serve`", lambda monkeypatch: launcher_flags()),
        ("`python -m services.api_gateway`", gateway_flags),
        ("`python -m services.text_engine` and `python -m services.vision_engine`", engine_flags),
    ],
)
def test_every_command_line_flag_is_documented(doc, monkeypatch, heading, flags):
    actual = flags(monkeypatch)
    assert "--models-config" in actual  # the parser was really found
    documented = {span.split()[0] for cell, _ in first_cells(doc[heading]) for span in code_spans(cell)}
    assert actual <= documented, f"{heading}: undocumented flags {sorted(actual - documented)}"
    assert documented <= actual, f"{heading}: documented flags that do not exist {sorted(documented - actual)}"


# Links --------------------------------------------------------------------------------------------------------

DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"#{1,6} ", line):
            continue
        anchor = github_anchor(line.lstrip("#"))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        result.add(anchor if count == 0 else f"{anchor}-{count}")
    return result


def links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)  # a regex in inline code is no link
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_and_anchors_resolve(path):
    broken = []
    for target in links(path):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        file_part, _, anchor = target.partition("#")
        file = (path.parent / file_part).resolve() if file_part else path
        if not file.exists():
            broken.append(f"{target} (no file {file_part})")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading makes #{anchor})")
    assert not broken, f"{path.relative_to(REPO_ROOT)}: {broken}"


def test_github_anchor_rules():
    assert github_anchor(" Responses API (`/v1/responses`)") == "responses-api-v1responses"
    assert github_anchor(" GGUF files (`gguf_file`)") == "gguf-files-gguf_file"
    assert github_anchor(" Vision: proxy or native") == "vision-proxy-or-native"
