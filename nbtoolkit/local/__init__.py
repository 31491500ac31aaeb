"""The offline engine and the local server that speaks every backend's protocol on 127.0.0.1."""

from nbtoolkit.local.faults import Faults
from nbtoolkit.local.server import LocalServer, create_app, start

__all__ = ["Faults", "LocalServer", "create_app", "start"]
