"""Benchmarks, run by hand (`python -m pretrain.benchmarks.<name>`): they print figures; CI times nothing."""
