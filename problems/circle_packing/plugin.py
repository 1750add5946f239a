"""Plugin entry point (filled in by its package)."""
