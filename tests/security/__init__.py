"""Security probes (placeholder docstring; rewritten below)."""
