"""`python -m services.model_builder --out models/tiny [--only text,vision,reasoning,bench,smollm2] [--force]`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .build import CHECKPOINTS, build_all


def main(argv: list[str] | None = None) -> int:
    """Parse the CLI, build, print `kind: path` per checkpoint; exit 2 on a bad `--only`."""
    parser = argparse.ArgumentParser(prog="python -m services.model_builder", description=__doc__)
    parser.add_argument("--out", default="models/tiny", help="directory for the checkpoints (default: models/tiny)")
    parser.add_argument(
        "--only",
        help=f"comma-separated kinds out of {', '.join(CHECKPOINTS)} "
        "(default: all but smollm2, the real model converted from a package's GGUF)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even the checkpoints that are complete")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s model_builder: %(message)s")
    logging.getLogger("transformers").setLevel(logging.ERROR)  # random-init and load reports are expected here
    only = {k.strip() for k in args.only.split(",") if k.strip()} if args.only else None
    try:
        built = build_all(Path(args.out), only=only, force=args.force)
    except ValueError as exc:
        parser.print_usage(sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for kind, path in sorted(built.items()):
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
