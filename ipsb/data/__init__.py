"""ipsb.data."""
