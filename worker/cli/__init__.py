"""The ``billing-worker`` command line."""
