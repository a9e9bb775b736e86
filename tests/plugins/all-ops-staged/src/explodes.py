"""Imported only by tests that point a tampered artifact's entryPoint here."""

raise RuntimeError("explodes on import")
