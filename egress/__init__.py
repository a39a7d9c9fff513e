"""egress: inline network egress firewall and flow classifier for sandboxes."""
__version__ = "0.1.0"
