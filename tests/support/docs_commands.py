"""The shell commands the README and docs/ show, as a reader would copy them: one per line of a ```bash block,
continuation lines joined, trailing comments dropped."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.S | re.M)
# A comment after a command is separated by at least two spaces; a '#' inside a command (a URL's fragment,
# a JSON string) is not.
_TRAILING_COMMENT = re.compile(r"\s{2,}#.*$")


@dataclass(frozen=True)
class DocCommand:
    """One command, and where it is shown ("docs/api.md:204")."""

    text: str
    where: str


def doc_commands(files: list[Path] = DOCS) -> list[DocCommand]:
    """Every command of every ```bash block of `files`, in order."""
    commands = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for block in _BLOCK.finditer(text):
            first_line = text[: block.start(1)].count("\n") + 1
            pending, start = "", 0
            for offset, raw in enumerate(block.group(1).splitlines()):
                if not pending:
                    start = offset
                    if not raw.strip() or raw.lstrip().startswith("#"):
                        continue
                line = raw if _open_quote(pending) else _TRAILING_COMMENT.sub("", raw).rstrip()
                if line.endswith("\\") and not _open_quote(pending + line[:-1]):
                    pending += line[:-1].rstrip() + " "
                    continue
                pending += line
                if _open_quote(pending):  # a quoted JSON body over several lines
                    pending += "\n"
                    continue
                where = f"{path.relative_to(REPO_ROOT)}:{first_line + start}"
                commands.append(DocCommand(pending.strip(), where))
                pending = ""
    return commands


def _open_quote(command: str) -> bool:
    """Whether `command` ends inside a quoted string (the shell would read on)."""
    try:
        shlex.split(command)
    except ValueError:
        return True
    return False
