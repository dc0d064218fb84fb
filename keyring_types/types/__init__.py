"""Built-in key types; importing this package registers them."""
