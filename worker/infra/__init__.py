"""Adapters to the outside that every part uses: Stripe, logs, metrics, JSON, notifications."""
