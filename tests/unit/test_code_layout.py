"""ruff format owns the layout: no code opts out of the formatter without saying why.

`make lint` runs `ruff format --check`, but a `# fmt: skip` or `# fmt: off` passes that check by design, so
this test is what keeps them rare (at most 40 in the tree, each with its reason on the line above).
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("services", "tests", "benchmarks")
OPT_OUT = re.compile(r"#\s*fmt:\s*(skip|off)\b")
MOST = 40


def _opt_outs() -> list[tuple[Path, int, list[str]]]:
    found = []
    for folder in CHECKED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "/pb/" in path.as_posix() or path == Path(__file__).resolve():
                continue
            lines = path.read_text(encoding="utf-8").splitlines()
            found += [(path, number, lines) for number, line in enumerate(lines) if OPT_OUT.search(line)]
    return found


def test_few_formatter_opt_outs():
    opt_outs = _opt_outs()
    assert len(opt_outs) <= MOST, f"{len(opt_outs)} lines opt out of ruff format (at most {MOST})"


def test_every_opt_out_says_why():
    unexplained = [
        f"{path.relative_to(ROOT)}:{number + 1}"
        for path, number, lines in _opt_outs()
        if number == 0 or not lines[number - 1].strip().startswith("#")
    ]
    assert not unexplained, f"a formatter opt-out needs a comment on the line above saying why: {unexplained}"


def test_the_pattern_finds_opt_outs():
    # The counting above is only as good as its pattern.
    assert OPT_OUT.search("x = [1,2]  # fmt: skip")
    assert OPT_OUT.search("# fmt: off")
    assert not OPT_OUT.search("# the formatter owns this")
