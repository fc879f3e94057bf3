"""mqtt-presence: clean device status from the raw MQTT connection lifecycle, through Kafka."""

__version__ = "0.1.0"
