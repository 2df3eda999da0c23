"""Kombu transports of this project (Redis Streams, NATS JetStream) and their registration."""
