"""Compiled cffi extensions (built from ``_native/``); use the wrappers, not these."""
