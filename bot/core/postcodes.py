"""French postcodes: their département and region (INSEE codes), and the one postcode in
what a person typed. Pure data and functions."""

from __future__ import annotations

import re

# -- postcodes, départements, regions ------------------------------------------------------

# Département -> region (INSEE region codes since 2016). Overseas collectivities that are
# not regions (975, 977, 978, 984, 986, 987, 988) are their own "region".
_REGIONS: dict[str, str] = {
    "84": "01 03 07 15 26 38 42 43 63 69 73 74",  # Auvergne-Rhône-Alpes
    "27": "21 25 39 58 70 71 89 90",  # Bourgogne-Franche-Comté
    "53": "22 29 35 56",  # Bretagne
    "24": "18 28 36 37 41 45",  # Centre-Val de Loire
    "94": "2A 2B",  # Corse
    "44": "08 10 51 52 54 55 57 67 68 88",  # Grand Est
    "32": "02 59 60 62 80",  # Hauts-de-France
    "11": "75 77 78 91 92 93 94 95",  # Île-de-France
    "28": "14 27 50 61 76",  # Normandie
    "75": "16 17 19 23 24 33 40 47 64 79 86 87",  # Nouvelle-Aquitaine
    "76": "09 11 12 30 31 32 34 46 48 65 66 81 82",  # Occitanie
    "52": "44 49 53 72 85",  # Pays de la Loire
    "93": "04 05 06 13 83 84",  # Provence-Alpes-Côte d'Azur
    "01": "971",  # Guadeloupe
    "02": "972",  # Martinique
    "03": "973",  # Guyane
    "04": "974",  # La Réunion
    "06": "976",  # Mayotte
}
REGION_OF: dict[str, str] = {
    dept: region for region, depts in _REGIONS.items() for dept in depts.split()
}
for _com in ("975", "977", "978", "984", "986", "987", "988"):
    REGION_OF[_com] = _com

_POSTCODE = re.compile(r"^\d{5}$")


def departement(postcode: str) -> str | None:
    """The département of a postcode: two digits, 2A/2B in Corsica, three overseas."""
    if not _POSTCODE.match(postcode or ""):
        return None
    if postcode[:2] in ("97", "98"):
        code = postcode[:3]
    elif postcode[:2] == "20":
        code = "2A" if int(postcode) < 20200 else "2B"
    else:
        code = postcode[:2]
    return code if code in REGION_OF else None


def region(postcode: str) -> str | None:
    dept = departement(postcode)
    return REGION_OF.get(dept) if dept else None


_POSTCODE_IN_TEXT = re.compile(r"(?<![\d])(\d{2})[ .]?(\d{3})(?![\d])")


def parse_postcode(text: str) -> str | None:
    """The one French postcode in what a person typed ("75011", "75 011", "c'est 97400");
    None when there is none, several, or it names no département ("00100", "98000")."""
    found = {a + b for a, b in _POSTCODE_IN_TEXT.findall(text or "")}
    if len(found) != 1:
        return None
    code = found.pop()
    return code if departement(code) else None
