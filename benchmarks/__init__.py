"""scardio benchmarks (a package so that its conftest does not collide with tests/conftest.py)."""
