"""Refresh the catalogs: extract messages from the code, keep existing translations, add the
ones waiting in ``locales/pending/*.json`` (``{msgid: {lang: text}}``), and list what is
still missing. Run: ``.venv/bin/python scripts/merge_pending.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
LOCALES = ROOT / "locales"


def main() -> int:
    pot = LOCALES / "relais.pot"
    subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", "extract", "-F", "babel.cfg",
         "-k", "N_", "--no-location", "--omit-header", "-o", str(pot), "."],
        cwd=ROOT, check=True, capture_output=True,
    )
    pending: dict[str, dict[str, str]] = {}
    for path in sorted((LOCALES / "pending").glob("*.json")):
        pending.update(json.loads(path.read_text(encoding="utf-8")))
    with pot.open("rb") as handle:
        template = read_po(handle)
    missing_any = False
    for folder in sorted(p for p in LOCALES.iterdir() if (p / "LC_MESSAGES").is_dir()):
        language = folder.name
        path = folder / "LC_MESSAGES" / "relais.po"
        old = None
        if path.exists():
            with path.open("rb") as handle:
                old = read_po(handle, locale=language)
        catalog = Catalog(locale=language, project="Relais", domain="relais", charset="utf-8",
                          fuzzy=False)
        missing = []
        for message in template:
            if not message.id:
                continue
            text = pending.get(message.id, {}).get(language)
            if not text and old is not None and message.id in old:
                text = old[message.id].string
            if not text and language == "en":
                text = message.id
            if not text:
                missing.append(message.id)
            catalog.add(message.id, text or "")
        with path.open("wb") as handle:
            write_po(handle, catalog, width=99, no_location=True, omit_header=False)
        if missing:
            missing_any = True
            print(f"{language}: {len(missing)} untranslated", *missing, sep="\n  ")
    return 1 if missing_any else 0


if __name__ == "__main__":
    raise SystemExit(main())
