"""Stripe Checkout Sessions for workspaces that have no subscription to change, and for credit packs."""
