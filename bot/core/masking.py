"""The masking hook every inbound text passes before it is stored or logged.

``mask`` runs the private-data detectors of ``bot.core.pii`` (social-security numbers, IBANs,
cards, passwords and codes) in the order of ``bot.core.pii.DETECTORS``, an explicit tuple: nothing
registers itself by being imported. Each detector returns the masked text and the kinds it
found, so the person can be warned once and reports can count it.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.core.pii import DETECTORS, KINDS, Detector, Masked

__all__ = ["DETECTORS", "KINDS", "Detector", "Masked", "mask"]


def mask(text: str, detectors: Sequence[Detector] = DETECTORS) -> Masked:
    """``text`` with its private data replaced by tokens (``[NIR]``, ``[IBAN]``, ``[CARTE]``,
    ``[MOT DE PASSE]``, ``[CODE]``) and the kinds found, in ``KINDS`` order."""
    found: set[str] = set()
    for detector in detectors:
        result = detector(text)
        text = result.text
        found.update(result.kinds)
    return Masked(text, tuple(kind for kind in KINDS if kind in found))
