"""`presence demo`: the whole product, live, on the local stack (`run`), with the story of why
(`story`) on screen (`screen`)."""

from mqtt_presence.demo.run import DemoError, run_demo

__all__ = ["DemoError", "run_demo"]
