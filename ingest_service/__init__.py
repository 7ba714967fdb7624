"""Headless services: the cloud gateway and the event processor (Kafka -> Delta)."""
