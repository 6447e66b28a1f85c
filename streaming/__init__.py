"""Streaming inference: products arrive on a message broker (NATS JetStream, RabbitMQ, Redis
Streams or Kafka), are scored in micro-batches by the champion the API serves, and leave as
prediction messages, logged to the same request log as /predict before they are acknowledged.

Sits above ``api`` and ``ml`` (it imports them; they never import it).
"""
