"""The connector: configuration, PAN-OS and SCM clients, secrets, state and the lifecycle."""

__version__ = "0.1.0"
