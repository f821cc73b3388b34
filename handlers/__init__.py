"""Functional core of billing-worker: pure, synchronous, no I/O."""
