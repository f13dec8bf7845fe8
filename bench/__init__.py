"""Pantheon's benchmark harness: `bash bench/run.sh` (see bench/README.md)."""
