"""han-gateway: a customer-side HAN energy gateway."""

__version__ = "0.1.0"
