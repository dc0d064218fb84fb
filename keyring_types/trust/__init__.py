"""Trust sources for trusted keys: tpm2, tee, caam, host, and plugins."""
