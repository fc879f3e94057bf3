"""The bridge: MQTT lifecycle messages in, a raw event per message to Kafka, losing nothing."""
