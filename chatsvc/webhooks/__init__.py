"""Webhooks: tenants' endpoints, the delivery outbox and its sender (docs/webhooks.md)."""
