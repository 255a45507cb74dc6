"""The masking hook every inbound text passes before it is stored or logged.

Detectors (social-security numbers, IBANs, cards, passwords) plug in with ``register``;
the coordinators issue adds them. Each detector returns the masked text and the kinds it
found, so the person can be warned once and reports can count it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Masked:
    text: str
    kinds: tuple[str, ...] = ()


Detector = Callable[[str], Masked]
_detectors: list[Detector] = []


def register(detector: Detector) -> Detector:
    """Add a detector (usable as a decorator). Detectors run in registration order."""
    if detector not in _detectors:
        _detectors.append(detector)
    return detector


def mask(text: str) -> Masked:
    kinds: list[str] = []
    for detector in _detectors:
        result = detector(text)
        text = result.text
        kinds.extend(k for k in result.kinds if k not in kinds)
    return Masked(text, tuple(kinds))
