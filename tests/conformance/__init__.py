"""The docs-driven conformance harness (see ``docs/conformance.md``)."""
