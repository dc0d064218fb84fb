"""Core: keys, keyrings, the key-type registry, permissions, quotas, expiry, GC."""
