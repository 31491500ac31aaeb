"""nbtoolkit: Jupyter widgets and clients for DashScope speech/audio LLMs, with an offline engine.

Start with ``nbtoolkit.connect()``; see the notebooks in ``notebooks/`` for each feature.
"""

from nbtoolkit.audio import Clip
from nbtoolkit.cassettes import record, replay
from nbtoolkit.config import Endpoints, Secret
from nbtoolkit.connection import connect
from nbtoolkit.errors import (
    AudioError,
    AuthError,
    BackendError,
    BudgetExceeded,
    ConfigError,
    ConnectionLost,
    ImageError,
    NbToolkitError,
    ProtocolError,
    RateLimited,
    ServerError,
)
from nbtoolkit.ledger import Ledger, session_ledger, set_session_budget
from nbtoolkit.results import Reply, Timeline, Turn, Usage

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "AuthError",
    "BackendError",
    "BudgetExceeded",
    "Clip",
    "ConfigError",
    "ConnectionLost",
    "Endpoints",
    "ImageError",
    "Ledger",
    "NbToolkitError",
    "ProtocolError",
    "RateLimited",
    "Reply",
    "Secret",
    "ServerError",
    "Timeline",
    "Turn",
    "Usage",
    "connect",
    "record",
    "replay",
    "session_ledger",
    "set_session_budget",
]
