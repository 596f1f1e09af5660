"""Kept for the tests that import from here: the harness is tests/support/stack.py (processes) and
tests/support/models_yaml.py (configs). New code imports from those."""

from __future__ import annotations

from tests.support.processes import wait_http, wait_until
from tests.support.stack import Stack, make_stack

__all__ = ["Stack", "make_stack", "wait_http", "wait_until"]
