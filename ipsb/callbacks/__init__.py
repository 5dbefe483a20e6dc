"""ipsb.callbacks."""
