"""mssgw, the MSSanté mail gateway daemon."""

__version__ = "0.1.0"
