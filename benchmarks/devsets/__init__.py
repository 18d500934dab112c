"""Dev sets composed deterministically by code from files that already exist (never committed)."""
