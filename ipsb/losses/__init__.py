"""ipsb.losses."""
