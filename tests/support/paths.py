"""Where things are: the repository root, the shipped example catalog, the Stripe fixtures."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CATALOG = ROOT / "worker" / "catalog.example.toml"
STRIPE_FIXTURES = ROOT / "tests" / "fixtures" / "stripe"
