"""The embedded servers of dev mode and tests."""
