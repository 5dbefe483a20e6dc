"""ipsb.basis."""
