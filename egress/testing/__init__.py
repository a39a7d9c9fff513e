"""Helpers for tests, golden captures and benchmarks (never imported by the engine)."""
