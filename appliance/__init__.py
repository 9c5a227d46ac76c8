"""Edge AI agent appliance: five cooperating services on one box."""

__version__ = "0.1.0"
