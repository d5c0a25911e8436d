"""Benchmarks (`make bench`): printed reports, never timed assertions."""
