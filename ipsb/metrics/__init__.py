"""ipsb.metrics."""
