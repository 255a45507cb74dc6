"""What the parts of contacts share: the consent purpose, batch size and field limits."""

from __future__ import annotations

import logging

log = logging.getLogger("relais.contacts")

NEWS = "news"
BATCH = 1000
MAX_NAME = 200
MAX_TAG = 64
SOURCE_MAX = 64
