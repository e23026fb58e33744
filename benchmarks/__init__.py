"""Throughput benchmark of the email backend against Django's SMTP backend (see README.md)."""
