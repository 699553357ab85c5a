"""The simulator tests use the shared fixtures of tests/conftest.py: sim, provider, beacon."""
