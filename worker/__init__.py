"""Imperative shell of billing-worker: HTTP, queue, database, Stripe."""
