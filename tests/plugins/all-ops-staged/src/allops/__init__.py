"""Helpers for the all-ops-staged test plugin (see tests/plugins/README.md)."""
