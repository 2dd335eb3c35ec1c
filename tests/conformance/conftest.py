"""Conformance suite: every example in docs/ is a test (the harness is built in issue 6)."""
