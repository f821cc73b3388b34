"""Where things are: the repository root, the shipped example catalog, the Stripe fixtures."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CATALOG = ROOT / "worker" / "catalog.example.toml"
STRIPE_FIXTURES = ROOT / "tests" / "fixtures" / "stripe"


def _captured() -> Path:
    """``shared/fixtures/stripe-captured`` beside the clone (CI), or beside one of its parents (a
    worktree under ``wt/``): real payloads tests read at run time and never copy into the repo."""
    for parent in ROOT.parents:
        candidate = parent / "shared" / "fixtures" / "stripe-captured"
        if candidate.is_dir():
            return candidate
    return ROOT.parent / "shared" / "fixtures" / "stripe-captured"  # missing: tests fail, naming it


STRIPE_CAPTURED = _captured()
