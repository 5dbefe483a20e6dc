"""``python -m ipsb`` == the ``ipsb`` console script."""
import sys

from ipsb.cli import main

sys.exit(main())
