"""`relais contacts import|list|show|tag|untag` through the real command, on SQLite and
PostgreSQL, with real messy files from spreadsheets (tests/data/contacts/)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain import contacts
from bot.storage.models import Address, Consent, Contact, Event, Tag
from tests.helpers.cli import relais
from tests.helpers.db import in_db

pytestmark = pytest.mark.usefixtures("no_dotenv")  # the CLI reads no .env

T = TypeVar("T")
DATA = Path(__file__).resolve().parents[1] / "data" / "contacts"
MESSY = DATA / "spreadsheet-fr-semicolon-bom.csv"
ENGLISH = DATA / "export-en-comma.csv"
CHANNELS = DATA / "addresses-with-channels.csv"
WINDOWS = DATA / "excel-windows-1252.csv"
NO_PHONE = DATA / "no-phone-column.csv"


def listed(db_url: str, *args: str) -> dict[str, dict[str, Any]]:
    code, out, err = relais(db_url, "contacts", "list", "--json", *args)
    assert (code, err) == (0, "")
    return {row["address"]: row for row in json.loads(out)}


def counts(db_url: str) -> tuple[int, ...]:
    async def work(session: AsyncSession) -> tuple[int, ...]:
        return tuple([
            await session.scalar(select(func.count()).select_from(model))
            for model in (Contact, Address, Tag, Consent)
        ])

    return in_db(db_url, work)


SUMMARY = (
    "14 rows: 9 created, 0 updated, 0 unchanged, 2 duplicate rows merged, "
    "0 skipped (forgotten after STOP), 3 rejected; 2 landlines (kept, not reachable by SMS)"
)


def test_messy_french_spreadsheet_imports_the_good_rows_and_reports_the_bad(db_url):
    code, out, err = relais(db_url, "contacts", "import", str(MESSY))
    assert code == 1  # some rows were rejected
    assert out == f"{MESSY.name}: {SUMMARY}\n"
    name = MESSY.name
    assert err.splitlines() == [
        f"relais: {name} line 10: phone '06 12 34' is not a valid phone number: row rejected",
        f"relais: {name} line 11: no phone number or address: row rejected",
        f"relais: {name} line 13: phone '6,12E+08' is not a valid phone number: row rejected",
        f"relais: {name} line 14: consent 'peut-être' is not yes/no/oui/non: not recorded",
        f"relais: {name} line 16: language 'xx' is not a language code like fr or en: "
        "left empty",
    ]
    people = listed(db_url)
    assert sorted(people) == [
        "sms:+262692123456", "sms:+33145678910", "sms:+33612345678", "sms:+33612345679",
        "sms:+33623456789", "sms:+33734567890", "sms:+33781223344", "sms:+596596612345",
        "sms:+596696123456",
    ]
    awa = people["sms:+33612345678"]  # "06 12 34 56 78" and "06.12.34.56.78": one person
    assert (awa["name"], awa["language"], awa["postcode"], awa["tags"], awa["news"]) == (
        "Awa Diallo", "fr", "59000", ["atelier", "caf", "numérique"], True
    )
    jean = people["sms:+33623456789"]  # "+33 6 …", language written "Anglais"
    assert (jean["language"], jean["news"]) == ("en", False)
    assert people["sms:+33734567890"]["language"] == "ar"  # "0033 7 …"
    assert people["sms:+33612345679"]["postcode"] == "01000"  # zeros a spreadsheet dropped
    dupont = people["sms:+33781223344"]  # a name over two lines; a duplicate row below
    assert (dupont["name"], dupont["tags"], dupont["news"], dupont["language"]) == (
        "Dupont Jean", ["atelier", "bénévole", "caf"], None, "fr"
    )
    landlines = {a for row in people.values() for a in row["landlines"]}
    assert landlines == {"sms:+33145678910", "sms:+596596612345"}  # kept, flagged
    assert people["sms:+596596612345"]["news"] is None


def test_overseas_numbers_get_their_region_and_time_zone(db_url):
    relais(db_url, "contacts", "import", str(MESSY))
    shown = {}
    for address in ("0692 12 34 56", "+596 696 12 34 56", "sms:+596596612345", "0612345678"):
        code, out, err = relais(db_url, "contacts", "show", address, "--json")
        assert (code, err) == (0, "")
        shown[address] = json.loads(out)
    assert shown["0692 12 34 56"]["timezone"] == "Indian/Reunion"
    assert shown["+596 696 12 34 56"]["timezone"] == "America/Martinique"
    landline = shown["sms:+596596612345"]
    assert landline["addresses"][0]["landline"] is True
    assert landline["timezone"] == "America/Martinique"
    assert shown["0612345678"]["timezone"] == "Europe/Paris"


def test_consent_is_recorded_with_its_source_and_time(db_url):
    relais(db_url, "contacts", "import", str(MESSY))

    async def work(session: AsyncSession) -> list[tuple[str, bool, str]]:
        rows = await session.execute(
            select(Address.external_id, Consent.granted, Consent.source, Consent.purpose,
                   Consent.at)
            .join(Consent, Consent.contact_id == Address.contact_id)
            .order_by(Address.external_id)
        )
        found = []
        for external_id, granted, source, purpose, at in rows:
            assert purpose == "news" and at.tzinfo is not None
            found.append((external_id, granted, source))
        return found

    source = f"import:{MESSY.name}"
    assert in_db(db_url, work) == [
        ("+262692123456", True, source), ("+33145678910", False, source),
        ("+33612345678", True, source), ("+33612345679", True, source),
        ("+33623456789", False, source), ("+33734567890", True, source),
    ]


def test_a_reimport_adds_nothing_new(db_url):
    relais(db_url, "contacts", "import", str(MESSY))
    before = counts(db_url)
    code, out, _err = relais(db_url, "contacts", "import", str(MESSY))
    assert code == 1
    assert out == (
        f"{MESSY.name}: 14 rows: 0 created, 0 updated, 9 unchanged, 2 duplicate rows merged, "
        "0 skipped (forgotten after STOP), 3 rejected; 2 landlines (kept, not reachable by SMS)\n"
    )
    assert counts(db_url) == before == (9, 9, 10, 6)


def test_dry_run_counts_but_stores_nothing(db_url):
    code, out, _err = relais(db_url, "contacts", "import", str(MESSY), "--dry-run")
    assert code == 1
    assert out == f"dry run, nothing stored: {MESSY.name}: {SUMMARY}\n"
    assert counts(db_url) == (0, 0, 0, 0)
    relais(db_url, "contacts", "import", str(MESSY))
    code, out, _err = relais(db_url, "contacts", "import", str(ENGLISH), "--dry-run")
    assert out.endswith("5 rows: 2 created, 2 updated, 0 unchanged, 0 duplicate rows merged, "
                        "0 skipped (forgotten after STOP), 1 rejected; 1 landlines "
                        "(kept, not reachable by SMS)\n")
    assert counts(db_url) == (9, 9, 10, 6)


def test_merging_adds_tags_fills_empty_fields_and_erases_nothing(db_url):
    relais(db_url, "contacts", "import", str(MESSY))
    code, out, err = relais(db_url, "contacts", "import", str(ENGLISH), "--tag", "Printemps")
    assert code == 1
    assert out == (
        f"{ENGLISH.name}: 5 rows: 2 created, 2 updated, 0 unchanged, 0 duplicate rows merged, "
        "0 skipped (forgotten after STOP), 1 rejected; 1 landlines (kept, not reachable by SMS)\n"
    )
    assert err == (f"relais: {ENGLISH.name} line 5: phone 'not a number' is not a valid phone "
                   "number: row rejected\n")
    people = listed(db_url)
    awa = people["sms:+33612345678"]
    # name, language and postcode kept; tags added; her "no" in the file is respected
    assert (awa["name"], awa["language"], awa["postcode"], awa["news"]) == (
        "Awa Diallo", "fr", "59000", False
    )
    assert awa["tags"] == ["atelier", "caf", "numérique", "printemps", "suivi"]
    dupont = people["sms:+33781223344"]
    assert (dupont["name"], dupont["news"]) == ("Dupont Jean", True)  # no decision before
    assert people["sms:+33970123456"]["landlines"] == ["sms:+33970123456"]  # 09: no SMS
    assert people["sms:+447911123456"]["language"] == "en"
    assert sorted(listed(db_url, "--tag", "PRINTEMPS")) == [
        "sms:+33612345678", "sms:+33781223344", "sms:+33970123456", "sms:+447911123456",
    ]


def test_a_persons_own_no_is_never_overridden_by_an_import(db_url):
    relais(db_url, "contacts", "import", str(ENGLISH))  # 07 81 22 33 44: yes, from the file

    async def said_no(session: AsyncSession) -> None:
        address = await session.scalar(
            select(Address).where(Address.external_id == "+33781223344")
        )
        session.add(Consent(contact_id=address.contact_id, purpose="news", granted=False,
                            at=datetime.now(UTC), source="chat:sms"))

    in_db(db_url, said_no)
    relais(db_url, "contacts", "import", str(ENGLISH))
    assert listed(db_url)["sms:+33781223344"]["news"] is False


def test_addresses_with_channels_and_two_numbers_in_a_cell(db_url):
    code, out, err = relais(db_url, "contacts", "import", str(CHANNELS))
    assert code == 1
    assert "5 rows: 3 created, 0 updated, 0 unchanged, 1 duplicate rows merged" in out
    assert err == (f"relais: {CHANNELS.name} line 5: 'telegram:abc' is not a valid address "
                   "(a Telegram chat id is a number): row rejected\n")
    people = listed(db_url)
    by_name = {row["name"]: row for row in people.values()}
    assert sorted(by_name["Awa"]["addresses"]) == ["sms:+33612345678", "whatsapp:+33612345678"]
    assert by_name["Léa"]["addresses"] == ["telegram:123456789"]
    assert sorted(by_name["Guadeloupe"]["addresses"]) == [
        "sms:+590590123456", "sms:+590690123456",
    ]
    assert by_name["Guadeloupe"]["landlines"] == ["sms:+590590123456"]


def test_a_windows_1252_export_is_read_with_a_warning(db_url):
    code, out, err = relais(db_url, "contacts", "import", str(WINDOWS))
    assert code == 0
    assert "2 rows: 2 created" in out
    assert err == (f"relais: {WINDOWS.name} line 1: the file is not UTF-8: read as "
                   "Windows-1252 (save it as CSV UTF-8)\n")
    people = listed(db_url)
    assert people["sms:+33612345678"]["name"] == "Hélène Gaël"  # first name, then name
    assert people["sms:+33612345678"]["tags"] == ["épicerie"]
    assert people["sms:+33734567890"]["name"] == "François Lefèvre"


def test_a_file_without_a_phone_column_imports_nothing(db_url):
    code, out, err = relais(db_url, "contacts", "import", str(NO_PHONE))
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"relais: {NO_PHONE.name}: line 1: no phone or address column (found 'Nom', "
        "'Adresse', 'Ville'); name one 'phone', 'téléphone', 'portable' or 'address'",
        f"relais: {NO_PHONE.name}: nothing imported",
    ]
    assert counts(db_url) == (0, 0, 0, 0)


def test_show_tag_untag_and_unknown_addresses(db_url):
    relais(db_url, "contacts", "import", str(MESSY))
    assert relais(db_url, "contacts", "tag", "06 12 34 56 78", "Jardin", "caf") == (
        0, "tagged sms:+33612345678: jardin\n", ""
    )
    assert relais(db_url, "contacts", "untag", "sms:+33612345678", "ATELIER") == (
        0, "untagged sms:+33612345678: atelier\n", ""
    )
    code, out, err = relais(db_url, "contacts", "show", "0612345678", "--json")
    assert (code, err) == (0, "")
    shown = json.loads(out)
    assert shown["tags"] == ["caf", "jardin", "numérique"]
    assert shown["consents"] == {"news": True}
    assert shown["created_at"].endswith("+00:00")
    assert relais(db_url, "contacts", "show", "0699999999") == (
        1, "", "relais: no contact at sms:+33699999999\n"
    )
    assert relais(db_url, "contacts", "tag", "0699999999", "x")[0] == 1
    assert relais(db_url, "contacts", "show", "pas un numéro")[0] == 2
    code, out, _err = relais(db_url, "contacts", "show", "0612345678")
    assert code == 0 and "Awa Diallo" in out and "tags: caf jardin numérique" in out


def test_list_as_a_table(db_url):
    relais(db_url, "contacts", "import", str(MESSY))
    code, out, _err = relais(db_url, "contacts", "list", "--tag", "partenaire")
    assert code == 0
    assert "landline" in out and out.rstrip().endswith("2 contacts")


# -- the import API, as the broadcast benchmark uses it -------------------------------------


def big_file(rows: int) -> bytes:
    lines = ["phone;nom;etiquettes;consentement"]
    for i in range(rows):
        number = f"06{10000000 + i * 7:08d}"
        lines.append(f"{number};Personne {i};groupe{i % 3};{'oui' if i % 2 else 'non'}")
    lines.append(f"06{10000000:08d};;retour;")  # a duplicate of the first, far below
    return ("\n".join(lines) + "\n").encode()


async def test_a_large_file_imports_in_batches(services):
    parsed = contacts.read_contacts(big_file(2500), extra_tags=["bench"])
    assert (parsed.rows, len(parsed.people), parsed.duplicates) == (2501, 2500, 1)
    done: list[int] = []
    summary = await contacts.import_contacts(
        services.sessions, parsed, now=services.clock.now(), default_timezone="Europe/Paris",
        source="big.csv", progress=done.append, batch_size=1000,
    )
    assert done == [1000, 1000, 500]
    assert (summary.created, summary.updated, summary.unchanged) == (2500, 0, 0)
    again = await contacts.import_contacts(
        services.sessions, parsed, now=services.clock.now(), default_timezone="Europe/Paris",
        source="big.csv", batch_size=1000,
    )
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2500)
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Contact)) == 2500
        assert await session.scalar(
            select(func.count()).select_from(Tag).where(Tag.tag == "bench")
        ) == 2500
        first = await contacts.find(session, "0610000000")
        assert first is not None and first.tags == ["bench", "groupe0", "retour"]
        new = await session.scalar(
            select(func.count()).select_from(Event).where(Event.kind == "contact.new")
        )
        assert new == 2500


@pytest.mark.parametrize(("written", "e164", "mobile"), [
    ("06 12 34 56 78", "+33612345678", True),
    ("06.12.34.56.78", "+33612345678", True),
    ("06-12-34-56-78", "+33612345678", True),
    ("+33 6 12 34 56 78", "+33612345678", True),
    ("+33 (0)6 12 34 56 78", "+33612345678", True),
    ("0033 6 12 34 56 78", "+33612345678", True),
    ("6 12 34 56 78", "+33612345678", True),
    ("Tél. 06 12 34 56 78", "+33612345678", True),
    ("0692 12 34 56", "+262692123456", True),
    ("0693 11 22 33", "+262693112233", True),
    ("0262 20 12 34", "+262262201234", False),
    ("0696 12 34 56", "+596696123456", True),
    ("0596 61 23 45", "+596596612345", False),
    ("0690 12 34 56", "+590690123456", True),
    ("0594 12 34 56", "+594594123456", False),
    ("0639 69 12 34", "+262639691234", True),
    ("01 45 67 89 10", "+33145678910", False),
    ("09 70 12 34 56", "+33970123456", False),
    ("+44 7911 123456", "+447911123456", True),
])
def test_phone_numbers_in_every_usual_form(written: str, e164: str, mobile: bool) -> None:
    assert contacts.phone_kind(written) == (e164, mobile)


@pytest.mark.parametrize("written", ["06 12 34", "6,12E+08", "not a number", "0800"])
def test_numbers_that_are_not_phone_numbers(written: str) -> None:
    with pytest.raises(contacts.AddressError):
        contacts.phone_kind(written)
