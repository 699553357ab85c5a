"""pitrix: VM-based application clusters on clouds, configured for their whole life."""

__version__ = "0.1.0"
