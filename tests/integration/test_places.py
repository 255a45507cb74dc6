"""Find a place near me: postcodes and regions, opening hours in plain words, the places
file importer (broken files import nothing, bad rows are reported by line), the nearest
places, and the conversation in French and English on both databases."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from sqlalchemy import func, select

from bot.core import postcodes, sms
from bot.domain import places
from bot.storage.db import make_engine, sessionmaker
from bot.storage.models import Contact, Event, Place, Ticket
from tests.helpers.cli import relais
from tests.helpers.dialog import Dialog, choose
from tests.helpers.factories import to_menu_as_known

DATA = Path(__file__).parents[1] / "data"
NOW = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
SAMPLE = places.read_places(places.SAMPLE.read_bytes())
LABELS = {"phone": "Tél : {phone}", "hours": "Horaires : {hours}"}



@pytest.fixture(autouse=True)
def office_hours():
    """A Monday morning in Paris: mediators are at work (their absence changes replies)."""
    with time_machine.travel(NOW, tick=False):
        yield

# -- postcodes, départements, regions ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "postcode", "dept", "region"),
    [
        ("75011", "75011", "75", "11"),
        ("75 011", "75011", "75", "11"),
        ("c'est le 93200 merci", "93200", "93", "11"),
        ("01000", "01000", "01", "84"),
        ("20000", "20000", "2A", "94"),
        ("20167", "20167", "2A", "94"),
        ("20200", "20200", "2B", "94"),
        ("20600", "20600", "2B", "94"),
        ("97400", "97400", "974", "04"),
        ("97410", "97410", "974", "04"),
        ("97600", "97600", "976", "06"),
        ("97100", "97100", "971", "01"),
        ("98800", "98800", "988", "988"),
        ("7501", None, None, None),
        ("750111", None, None, None),
        ("00100", None, None, None),
        ("96000", None, None, None),
        ("98000", None, None, None),  # Monaco
        ("97900", None, None, None),
        ("abcde", None, None, None),
        ("75011 ou 75012", None, None, None),
        ("", None, None, None),
    ],
)
def test_postcodes(text, postcode, dept, region):
    assert postcodes.parse_postcode(text) == postcode
    if postcode:
        assert postcodes.departement(postcode) == dept
        assert postcodes.region(postcode) == region


def test_every_departement_has_a_region():
    metropolitan = {f"{n:02d}" for n in range(1, 96) if n != 20} | {"2A", "2B"}
    overseas = {"971", "972", "973", "974", "976"}
    assert len(metropolitan) == 96
    assert metropolitan | overseas <= set(postcodes.REGION_OF)
    assert len({postcodes.REGION_OF[d] for d in metropolitan}) == 13
    assert {postcodes.REGION_OF[d] for d in overseas} == {"01", "02", "03", "04", "06"}


# -- opening hours ---------------------------------------------------------------------------

HOURS_TABLE = [
    ("Mo-Fr 09:00-12:00,14:00-17:00", "lun-ven 9h-12h, 14h-17h", "Mon-Fri 9am-12pm, 2pm-5pm"),
    ("Mo-Fr 09:00-12:00,14:00-18:30; Sa 08:30-12:00",
     "lun-ven 9h-12h, 14h-18h30; sam 8h30-12h",
     "Mon-Fri 9am-12pm, 2pm-6:30pm; Sat 8:30am-12pm"),
    ("Tu,Th 14:00-17:00", "mar et jeu 14h-17h", "Tue and Thu 2pm-5pm"),
    ("Mo,We,Fr 09:00-12:00", "lun, mer et ven 9h-12h", "Mon, Wed and Fri 9am-12pm"),
    ("Mo-Fr 9:00-17:00", "lun-ven 9h-17h", "Mon-Fri 9am-5pm"),
    ("Mo-Fr 12:00-12:30", "lun-ven 12h-12h30", "Mon-Fri 12pm-12:30pm"),
    ("10:00-18:00", "tous les jours 10h-18h", "every day 10am-6pm"),
    ("Mo-Su 09:00-18:00", "tous les jours 9h-18h", "every day 9am-6pm"),
    ("24/7", "tous les jours, 24h/24", "every day, 24 hours"),
    ("Mo-Fr 00:00-24:00", "lun-ven 24h/24", "Mon-Fri 24 hours"),
    ("Mo-Fr 22:00-02:00", "lun-ven 22h-2h", "Mon-Fri 10pm-2am"),
    ("Mo-Fr 09:00-17:00; PH off", "lun-ven 9h-17h; fermé les jours fériés",
     "Mon-Fri 9am-5pm; closed on public holidays"),
    ("Mo-Sa 10:00-19:00; Su off", "lun-sam 10h-19h", "Mon-Sat 10am-7pm"),
    ("Mo-Fr 08:00-12:00, Sa 09:00-12:00", "lun-ven 8h-12h; sam 9h-12h",
     "Mon-Fri 8am-12pm; Sat 9am-12pm"),
    ("Mo-Fr 09:00-12:00,14:00-17:00; We 09:00-12:00",
     "lun-mar et jeu-ven 9h-12h, 14h-17h; mer 9h-12h",
     "Mon-Tue and Thu-Fri 9am-12pm, 2pm-5pm; Wed 9am-12pm"),
    ("Su,PH off; Mo-Sa 09:00-12:00", "dim et jours fériés fermé; lun-sam 9h-12h",
     "Sun and public holidays closed; Mon-Sat 9am-12pm"),
    ("off", "fermé", "closed"),
    # What the renderer does not put in words comes back as written.
    ("Jan-Jun Mo 10:00-12:00", "Jan-Jun Mo 10:00-12:00", "Jan-Jun Mo 10:00-12:00"),
    ('Mo 10:00-12:00 "sur rendez-vous"', 'Mo 10:00-12:00 "sur rendez-vous"',
     'Mo 10:00-12:00 "sur rendez-vous"'),
    ("sunrise-sunset", "sunrise-sunset", "sunrise-sunset"),
    ("lundi matin", "lundi matin", "lundi matin"),
    ("  Mo-Fr   09:00-12:00 ", "lun-ven 9h-12h", "Mon-Fri 9am-12pm"),
]


@pytest.mark.parametrize(("raw", "french", "english"), HOURS_TABLE)
def test_opening_hours_in_plain_words(raw, french, english):
    assert places.hours_in_words(raw, "fr") == french
    assert places.hours_in_words(raw, "en") == english


def test_no_hours_is_none():
    assert places.hours_in_words(None) is None
    assert places.hours_in_words("  ") is None


# -- one place as a message --------------------------------------------------------------------


def test_a_place_message_fits_two_sms_even_when_long():
    place = Place(
        id="x", name="Maison des services au public et de la médiation numérique " * 3,
        address="12 bis avenue du Général de Gaulle, bâtiment C, escalier 4, 2e étage",
        postcode="75011", commune="Paris", phone="+33199000101",
        hours="Mo-Fr 09:00-12:00,14:00-17:00; Sa 09:00-12:00; Su 10:00-12:00; PH off",
    )
    text = places.fit_sms(places.place_lines(place, "fr", LABELS))
    assert sms.segments(sms.normalise(text)) <= 2
    assert text.splitlines()[2] == "Tél : 01 99 00 01 01"
    assert "..." in text.splitlines()[0]


@pytest.mark.parametrize("row", SAMPLE.rows, ids=lambda row: row["id"])
def test_every_sample_place_fits_two_sms_in_french_and_english(row):
    place = Place(**row)
    for language in ("fr", "en"):
        lines = places.place_lines(place, language, LABELS)
        assert places.fit_sms(lines) == "\n".join(lines)  # nothing had to be cut
        assert sms.segments(sms.normalise("\n".join(lines))) <= 2


# -- reading places files -----------------------------------------------------------------------


def read(name: str) -> places.PlacesFile:
    return places.read_places((DATA / name).read_bytes())


def test_the_sample_file_is_in_the_standard_format_and_clean():
    assert (SAMPLE.error, SAMPLE.rejected, SAMPLE.warnings) == (None, [], [])
    assert 10 <= len(SAMPLE.rows) <= 20
    depts = {postcodes.departement(row["postcode"]) for row in SAMPLE.rows}
    assert "974" in depts and len(depts) >= 8
    header = places.SAMPLE.read_text(encoding="utf-8").splitlines()[0].split(",")
    for column in ("id", "nom", "adresse", "code_postal", "commune", "latitude", "longitude",
                   "telephone", "horaires", "services", "prise_rdv",
                   "dispositif_programmes_nationaux"):
        assert column in header


def test_semicolons_bom_and_a_field_on_two_lines():
    parsed = read("places-semicolon-bom.csv")
    assert (parsed.error, parsed.rejected, parsed.warnings) == (None, [], [])
    first, second, third = parsed.rows
    assert first["phone"] == "+262262201020"  # written 0262 20 10 20
    assert (first["latitude"], first["longitude"]) == (-21.339, 55.478)  # decimal commas
    assert first["booking_url"] == "https://www.rdv-solidarites.fr/"
    assert second["name"] == 'Centre social "Les Lilas"'
    assert second["address"] == "2 avenue des Lilas Bâtiment B"
    assert third["phone"] is None and third["hours"] is None


def test_the_lamednum_example_format_reads():
    parsed = read("places-lamednum-format.csv")
    assert (parsed.error, parsed.rejected, parsed.warnings) == (None, [], [])
    (row,) = parsed.rows
    assert row["id"] == "lieu-42" and row["postcode"] == "51100"
    assert row["address"] == "8 RUE DES ORMES (Rez-de-chaussée)"
    assert row["hours"] == "Mo-Fr 09:00-12:00,14:00-18:30; Sa 08:30-12:00"
    assert row["extra"]["dispositif_programmes_nationaux"] == "Conseillers numériques"


def test_bad_rows_are_reported_by_line_and_the_rest_reads():
    parsed = read("places-bad-rows.csv")
    assert parsed.error is None
    assert [row["id"] for row in parsed.rows] == ["good-1", "good-2", "good-3"]
    assert [str(problem) for problem in parsed.rejected] == [
        "line 3: code_postal '7501A' is not a French postcode",
        "line 4: id is empty",
        "line 5: nom is empty",
        "line 8: id 'good-1' is already used on line 2",
        "line 9: 3 fields where the header has 10",
        "line 12: code_postal '98000' is not a French postcode",
    ]
    assert [str(problem) for problem in parsed.warnings] == [
        "line 10: good-3: telephone '12345' is not a phone number; left out",
        "line 10: good-3: latitude 'north' is not a coordinate; left out",
        "line 10: good-3: horaires 'lundi matin' are not in the OpenStreetMap format;"
        " shown as written",
    ]
    assert parsed.rows[1]["name"] == 'Centre "Multi ligne"'
    assert parsed.rows[2]["hours"] == "lundi matin"  # kept, shown as written


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("places-missing-columns.csv", "not a places file in the standard-mediation-num "
                                       "format: missing column(s) code_postal, commune"),
        ("places-latin1.csv", "line 2: the file is not UTF-8 text (save it as CSV UTF-8)"),
        ("places-not-csv.png", "not a CSV text file"),
        ("catalogue-ok.yaml", "not a places file in the standard-mediation-num format: "
                              "missing column(s) id, nom, adresse, code_postal, commune"),
    ],
)
def test_files_that_are_not_places_files(name, error):
    parsed = read(name)
    assert parsed.error == error
    assert parsed.rows == []


def test_a_broken_quote_breaks_the_whole_file():
    data = b'id,nom,adresse,code_postal,commune\np1,Un,1 rue,75011,Paris\np2,"Deux,2 rue,75011'
    parsed = places.read_places(data)
    assert parsed.error is not None and parsed.error.startswith("line 3: the CSV is broken")
    assert parsed.rows == []


# -- storing and nearest places -------------------------------------------------------------

ORDER_CSV = """id,nom,adresse,code_postal,commune
z11,Zèbre numérique,1 rue A,75011,Paris
a11,Abeille numérique,2 rue B,75011,Paris
e11,Écureuil numérique,3 rue C,75011,Paris
b20,Belleville numérique,4 rue D,75020,Paris
c93,Centre de Saint-Denis,5 rue E,93200,Saint-Denis
d94,Dauphin de Créteil,6 rue F,94000,Créteil
l69,Lyon numérique,7 rue G,69003,Lyon
m13,Marseille numérique,8 rue H,13003,Marseille
a2a,Ajaccio numérique,9 rue I,20000,Ajaccio
b2b,Bastia numérique,10 rue J,20200,Bastia
r974,Réunion numérique,11 rue K,97400,Saint-Denis
"""


async def store(services, data: str | bytes) -> places.PlacesSummary:
    parsed = places.read_places(data.encode() if isinstance(data, str) else data)
    assert parsed.error is None and not parsed.rejected
    async with services.sessions() as session, session.begin():
        return await places.merge_places(session, parsed.rows, NOW)


async def nearest(services, postcode: str) -> list[str]:
    async with services.sessions() as session:
        return [p.id for p in await places.nearest(session, postcode)]


async def test_same_postcode_then_departement_then_region_by_name(services):
    await store(services, ORDER_CSV)
    assert await nearest(services, "75011") == ["a11", "e11", "z11"]  # accents ignored
    assert await nearest(services, "75020") == ["b20", "a11", "e11"]
    assert await nearest(services, "75015") == ["a11", "b20", "e11"]
    assert await nearest(services, "93100") == ["c93", "a11", "b20"]
    assert await nearest(services, "94000") == ["d94", "a11", "b20"]
    assert await nearest(services, "13001") == ["m13"]  # Lyon is another region
    assert await nearest(services, "20090") == ["a2a", "b2b"]  # Corse-du-Sud first
    assert await nearest(services, "20600") == ["b2b", "a2a"]
    assert await nearest(services, "97410") == ["r974"]
    assert await nearest(services, "97600") == []  # Mayotte: none there
    assert await nearest(services, "29200") == []


async def test_merge_updates_by_id_and_a_real_import_removes_the_samples(services):
    async with services.sessions() as session, session.begin():
        assert await places.ensure_loaded(session, NOW) == len(SAMPLE.rows)
        assert await places.ensure_loaded(session, NOW) == 0
    first = await store(services, ORDER_CSV)
    assert (first.added, first.updated, first.unchanged) == (11, 0, 0)
    assert first.samples_removed == len(SAMPLE.rows)
    changed = ORDER_CSV.replace("Zèbre numérique,1 rue A", "Zèbre numérique,1 bis rue A")
    second = await store(services, changed)
    assert (second.added, second.updated, second.unchanged) == (0, 1, 10)
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Place)) == 11
        zebre = await session.get(Place, "z11")
    assert zebre is not None and zebre.address == "1 bis rue A"


def stored_places(db_url: str) -> list[str]:
    async def go() -> list[str]:
        engine = make_engine(db_url)
        try:
            async with sessionmaker(engine)() as session:
                return sorted((await session.scalars(select(Place.id))).all())
        finally:
            await engine.dispose()

    return asyncio.run(go())


@pytest.mark.parametrize(
    "name",
    ["places-missing-columns.csv", "places-latin1.csv", "places-not-csv.png",
     "catalogue-ok.yaml"],
)
def test_cli_broken_places_file_imports_nothing(db_url, no_dotenv, name):
    result = relais(db_url, "resources", "import", "--places", str(DATA / name))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"relais: {name}: ")
    assert lines[-1] == f"relais: {name}: nothing imported"
    assert result.stdout == ""
    assert stored_places(db_url) == []


def test_cli_bad_rows_are_rejected_the_rest_imports_exit_1(db_url, no_dotenv):
    result = relais(db_url, "resources", "import", "--places", str(DATA / "places-bad-rows.csv"))
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert errors[:2] == [
        "relais: places-bad-rows.csv line 3: code_postal '7501A' is not a French postcode:"
        " row rejected",
        "relais: places-bad-rows.csv line 4: id is empty: row rejected",
    ]
    assert len(errors) == 6 + 3  # six rejected rows, three warnings, in line order
    assert errors[5] == "relais: places-bad-rows.csv line 10: good-3: telephone '12345' is" \
                        " not a phone number; left out"
    assert result.stdout == (
        "places: 3 imported (3 added, 0 updated, 0 unchanged), 6 rejected\n"
    )
    assert stored_places(db_url) == ["good-1", "good-2", "good-3"]


def test_cli_good_file_imports_and_lists(db_url, no_dotenv):
    result = relais(db_url, "resources", "import", "--places",
                    str(DATA / "places-semicolon-bom.csv"))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "places: 3 imported (3 added, 0 updated, 0 unchanged), 0 rejected\n"
    listed = relais(db_url, "resources", "list", "--places", "--json")
    assert listed.exit_code == 0
    data = json.loads(listed.stdout)
    assert [item["id"] for item in data] == ["pl-3", "pl-2", "pl-1"]  # by postcode
    assert data[2]["phone"] == "+262262201020"
    near = relais(db_url, "resources", "list", "--places", "--postcode", "97400", "--json")
    assert [item["id"] for item in json.loads(near.stdout)] == ["pl-1"]
    bad = relais(db_url, "resources", "list", "--places", "--postcode", "123")
    assert bad.exit_code == 2 and "'123' is not a French postcode" in bad.stderr


def test_cli_list_on_a_fresh_install_shows_the_samples(db_url, no_dotenv):
    result = relais(db_url, "resources", "list", "--places")
    assert result.exit_code == 0
    assert f"{len(SAMPLE.rows)} places" in result.stdout
    assert stored_places(db_url) == sorted(row["id"] for row in SAMPLE.rows)


# -- the conversation --------------------------------------------------------------------------


async def to_menu(dialog: Dialog, language: str, postcode: str | None = None) -> list:
    """A person who went through onboarding already: straight to the main menu."""
    return await to_menu_as_known(dialog, NOW, "places", language=language, postcode=postcode)


async def the_contact(services) -> Contact:
    async with services.sessions() as session:
        contact = await session.scalar(select(Contact))
    assert contact is not None
    return contact


async def test_french_sms_asks_the_postcode_kindly_then_three_places(services):
    dialog = Dialog(services, who="+33612345678", channel="sms")
    asked = await choose(dialog, await to_menu(dialog, "fr"), "places")
    assert Dialog.texts(asked) == [
        "Quel est votre code postal ? Envoyez les 5 chiffres, par exemple 75011.\n1. Passer"
    ]
    again = await dialog.send("Paris")
    assert Dialog.texts(again) == [
        "Pardon, ce n'est pas un code postal. Envoyez les 5 chiffres, par exemple 93200."
    ]
    got = await dialog.send("75 011")
    text = "\n\n".join(Dialog.texts(got))
    assert text.startswith("Lieux près de 75011 où l'on peut vous aider :\n\n"
                           "Bibliothèque Voltaire, espace numérique\n"
                           "3 boulevard Voltaire (1er étage), 75011 Paris\n"
                           "Tél : 01 99 00 01 02\nHoraires : mar-sam 10h-18h\n\n"
                           "Centre social Les Tilleuls\n12 rue de la Roquette, 75011 Paris\n"
                           "Tél : 01 99 00 01 01\nHoraires : lun-ven 9h-12h, 14h-17h\n\n"
                           "Point numérique de Belleville\n")
    assert text.endswith("Pour chercher ailleurs, envoyez un autre code postal.\n"
                         "1. Retour au menu\n2. Parler à une personne")
    for message in got:
        assert sms.segments(sms.normalise(Dialog.texts([message])[0])) <= 2
    contact = await the_contact(services)
    assert contact.postcode == "75011" and contact.timezone == "Europe/Paris"


async def test_a_stored_postcode_is_used_and_another_can_be_sent(services):
    dialog = Dialog(services)
    got = await choose(dialog, await to_menu(dialog, "fr", postcode="69003"), "places")
    assert Dialog.texts(got)[0].startswith(
        "Lieux près de 69003 où l'on peut vous aider :\n\nMaison de la métropole Lyon 3e\n")
    elsewhere = await dialog.send("97410")
    text = Dialog.texts(elsewhere)[0]
    assert text.startswith("Lieux près de 97410 où l'on peut vous aider :\n\n"
                           "Cyberbase de Saint-Pierre\n22 rue des Bons Enfants, 97410 "
                           "Saint-Pierre\nHoraires : lun-ven 8h-15h30\n\n"
                           "Maison France Services de Saint-Denis\n")
    contact = await the_contact(services)
    assert contact.postcode == "97410" and contact.timezone == "Indian/Reunion"
    menu = await choose(dialog, elsewhere, "menu")
    assert "places" in Dialog.last_choices(menu)
    assert await events(services, "places.shown") == [
        {"found": 3, "departement": "69"}, {"found": 2, "departement": "974"}
    ]


async def test_skip_goes_back_to_the_menu(services):
    dialog = Dialog(services)
    await choose(dialog, await to_menu(dialog, "fr"), "places")
    menu = await dialog.send("passer")
    assert Dialog.texts(menu)[0].startswith("De quoi avez-vous besoin ?")
    contact = await the_contact(services)
    assert contact.postcode is None


async def test_no_place_known_offers_a_person(services):
    dialog = Dialog(services)
    await choose(dialog, await to_menu(dialog, "fr"), "places")
    got = await dialog.send("97600")
    assert Dialog.texts(got) == [
        "Pardon, nous ne connaissons pas encore de lieu d'aide près de 97600.\n\n"
        "Voulez-vous qu'une personne vous aide ?\n1. Oui\n2. Non"
    ]
    await choose(dialog, got, "yes")
    async with services.sessions() as session:
        ticket = await session.scalar(select(Ticket))
    assert ticket is not None and ticket.source == "places"


async def test_three_wrong_postcodes_offer_a_person(services):
    dialog = Dialog(services)
    await choose(dialog, await to_menu(dialog, "fr"), "places")
    await dialog.send("euh")
    await dialog.send("je sais pas")
    offer = await dialog.send("1234")
    assert Dialog.texts(offer) == ["Voulez-vous qu'une personne vous aide ?\n1. Oui\n2. Non"]
    menu = await choose(dialog, offer, "no")
    assert "places" in Dialog.last_choices(menu)


async def test_english_telegram_gets_all_places_in_one_message(services):
    dialog = Dialog(services, who="424242", channel="telegram")
    asked = await choose(dialog, await to_menu(dialog, "en"), "places")
    assert Dialog.texts(asked) == [
        "What is your postcode? Send the 5 digits, for example 75011.\n1. Skip"
    ]
    got = await dialog.send("93200")
    assert len(got) == 1
    assert Dialog.texts(got)[0] == (
        "Places near 93200 where someone can help you:\n\n"
        "Maison de services au public Saint-Denis\n5 rue de la République, 93200 Saint-Denis\n"
        "Phone: 01 99 00 01 04\n"
        "Hours: Mon-Fri 8:30am-12pm, 1:30pm-5pm; closed on public holidays\n\n"
        "Centre social La Noue\n20 rue de Paris, 93100 Montreuil\nPhone: 01 99 00 01 05\n"
        "Hours: Mon, Wed and Fri 9am-12pm\n\n"
        "Bibliothèque Voltaire, espace numérique\n"
        "3 boulevard Voltaire (1er étage), 75011 Paris\nPhone: 01 99 00 01 02\n"
        "Hours: Tue-Sat 10am-6pm\n\n"
        "To look elsewhere, send another postcode.\n1. Back to the menu\n2. Talk to a person"
    )


async def test_english_sms_one_place_per_message_and_a_person_on_request(services):
    dialog = Dialog(services, who="+33612345678", channel="sms")
    got = await choose(dialog, await to_menu(dialog, "en", postcode="59000"), "places")
    texts = Dialog.texts(got)
    assert texts[0].startswith("Places near 59000 where someone can help you:\n\n"
                               "Espace numérique de Wazemmes\n")
    assert "Hours: Mon-Sat 10am-6pm" in texts[0]
    for message in got:
        assert sms.segments(sms.normalise(Dialog.texts([message])[0])) <= 2
    asked = await choose(dialog, got, "human")
    assert Dialog.texts(asked) == ["Thank you. A person from Relais will answer you here."]
    async with services.sessions() as session:
        ticket = await session.scalar(select(Ticket))
    assert ticket is not None and ticket.source == "places"


async def events(services, kind: str) -> list[dict]:
    async with services.sessions() as session:
        found = await session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id))
        return [event.value for event in found]
