"""Operator repairs and health: reconcile, backfill, dead-letter recovery, probes and gauges."""
