"""ipsb.stages."""
