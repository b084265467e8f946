"""Hardening tests: malformed input, properties, rate limits and faults, on the real stack."""
