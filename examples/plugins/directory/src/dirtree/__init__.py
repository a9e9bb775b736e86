"""Helpers of the directory-tree plugin (shell commands and host calls)."""
