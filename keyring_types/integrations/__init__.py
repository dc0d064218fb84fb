"""Bridges to the kernel and its consumers (kernel keyring, fscrypt, dm-crypt)."""
