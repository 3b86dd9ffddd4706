"""Security of the embedded stack: its CA and certificates, the principals' credentials, and
Kafka's ACLs (docs/security.md)."""
