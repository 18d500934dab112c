"""Dev sets composed deterministically by code from media that is already on the machine."""
