"""sales-recovery: the operators' command line for the REST API (local stack or deployed, SigV4-signed)."""
