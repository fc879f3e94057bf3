"""The bridge's errors: one base, a few specific ones whose messages say what to do."""

from mqtt_presence.errors import PresenceError


class BridgeError(PresenceError):
    """The bridge cannot go on."""


class SubscriptionDeniedError(BridgeError):
    """The broker refused a subscription (SUBACK failure reason code)."""


class ClientIdConflictError(BridgeError):
    """Another client connected with our client id and took our session over (MQTT 5 0x8E)."""


class BrokerRefusedError(BridgeError):
    """The broker refused the connection (bad credentials, not authorised, ...)."""


class ConfigurationError(BridgeError):
    """The bridge's configuration is wrong (a bad topic pattern, an unknown profile, ...)."""
