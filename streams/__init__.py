"""The workers: faust-streaming agents and tables around the pure core (`mqtt_presence.core`),
from presence.raw and presence.ticks to presence.status and the HTTP API."""
