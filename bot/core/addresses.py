"""Addresses (``CHANNEL:ID``), French phone numbers and a person's time zone."""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers

CHANNELS = ("sms", "whatsapp", "telegram", "terminal")
PHONE_CHANNELS = ("sms", "whatsapp")
# French regions tried in order when a number has no country code (overseas departments
# have their own ITU regions in libphonenumber).
FRENCH_REGIONS = ("FR", "RE", "GP", "MQ", "GF", "YT", "PM", "NC", "PF", "WF", "BL", "MF")

# National prefixes of overseas numbers that the metropolitan plan would also accept
# (Martinique 0596…, Saint-Pierre 0508…): try their own region first.
OVERSEAS_PREFIXES = {
    "0262": "RE", "0263": "RE", "0692": "RE", "0693": "RE",
    "0269": "YT", "0639": "YT",
    "0590": "GP", "0690": "GP", "0691": "GP",
    "0594": "GF", "0694": "GF",
    "0596": "MQ", "0696": "MQ", "0697": "MQ",
    "0508": "PM",
}

REGION_TIMEZONES = {
    "RE": "Indian/Reunion",
    "YT": "Indian/Mayotte",
    "GP": "America/Guadeloupe",
    "MQ": "America/Martinique",
    "GF": "America/Cayenne",
    "PM": "America/Miquelon",
    "BL": "America/St_Barthelemy",
    "MF": "America/Marigot",
    "NC": "Pacific/Noumea",
    "PF": "Pacific/Tahiti",
    "WF": "Pacific/Wallis",
}
POSTCODE_TIMEZONES = {
    "971": "America/Guadeloupe",
    "972": "America/Martinique",
    "973": "America/Cayenne",
    "974": "Indian/Reunion",
    "975": "America/Miquelon",
    "976": "Indian/Mayotte",
    "977": "America/St_Barthelemy",
    "978": "America/Marigot",
    "986": "Pacific/Wallis",
    "987": "Pacific/Tahiti",
    "988": "Pacific/Noumea",
}


class AddressError(ValueError):
    """An address or phone number that cannot be understood; the message says why."""


@dataclass(frozen=True, order=True)
class Address:
    channel: str
    id: str

    def __str__(self) -> str:
        return f"{self.channel}:{self.id}"


def parse_phone(raw: str) -> phonenumbers.PhoneNumber:
    """Parse a phone number written in any usual French form; raise AddressError."""
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    last_error = "not a phone number"
    regions: tuple[str | None, ...] = (None,) if text.startswith("+") else FRENCH_REGIONS
    digits = "".join(c for c in text if c.isdigit())
    overseas = OVERSEAS_PREFIXES.get(digits[:4]) if digits.startswith("0") else None
    if overseas is not None:
        regions = (overseas, *[r for r in regions if r != overseas])
    for region in regions:
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException as exc:
            last_error = str(exc)
            continue
        if phonenumbers.is_valid_number(number):
            return number
        last_error = "not a valid number"
    raise AddressError(f"{raw!r}: {last_error}")


def normalise_phone(raw: str) -> str:
    """E.164 form of a phone number (``+33612345678``)."""
    number = parse_phone(raw)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def show_phone(e164: str, *, national: bool = False) -> str:
    """A stored E.164 number to read: ``+33 6 12 34 56 78`` (international: readable and
    unambiguous), or ``06 12 34 56 78`` (``national``, the way people write it here)."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    form = phonenumbers.PhoneNumberFormat
    return phonenumbers.format_number(number, form.NATIONAL if national else form.INTERNATIONAL)


def is_mobile(e164: str) -> bool:
    """False for landlines (not reachable by SMS); True when mobile or unknown-but-possible."""
    number = phonenumbers.parse(e164, None)
    kind = phonenumbers.number_type(number)
    return kind in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )


def parse_address(raw: str) -> Address:
    """``CHANNEL:ID`` → Address; a bare phone number means ``sms:``."""
    text = raw.strip()
    channel, sep, ident = text.partition(":")
    channel = channel.lower()
    if not sep or channel not in CHANNELS:
        return Address("sms", normalise_phone(text))
    ident = ident.strip()
    if not ident:
        raise AddressError(f"{raw!r}: empty id after {channel}:")
    if channel in PHONE_CHANNELS:
        return Address(channel, normalise_phone(ident))
    if channel == "telegram" and not ident.lstrip("-").isdigit():
        raise AddressError(f"{raw!r}: a Telegram chat id is a number")
    return Address(channel, ident)


def timezone_for(postcode: str | None, address: Address | None, default: str) -> str:
    """Time zone from the postcode (97x/98x), else the number's region, else the default."""
    if postcode and len(postcode) >= 3 and postcode[:3] in POSTCODE_TIMEZONES:
        return POSTCODE_TIMEZONES[postcode[:3]]
    if address is not None and address.channel in PHONE_CHANNELS:
        try:
            region = phonenumbers.region_code_for_number(phonenumbers.parse(address.id, None))
        except phonenumbers.NumberParseException:
            region = None
        if region in REGION_TIMEZONES:
            return REGION_TIMEZONES[region]
    return default
