"""ipsb.nets."""
