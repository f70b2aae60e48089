"""Yardsticks the benchmarks measure the app against."""
