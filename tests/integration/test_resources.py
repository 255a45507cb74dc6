"""Help with a procedure: the shipped catalogue, its validator and importer, the search,
and the conversation in French and English on both databases."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import time_machine
from sqlalchemy import func, select

from bot.core import sms
from bot.domain import resources
from bot.storage.db import make_engine, sessionmaker
from bot.storage.models import Event, Resource, Ticket
from tests.helpers.cli import relais
from tests.helpers.dialog import Dialog, choose
from tests.helpers.factories import to_menu_as_known

DATA = Path(__file__).parents[1] / "data"
NOW = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
SHIPPED = resources.load_file(resources.SHIPPED)


def rows(catalogue: resources.Catalogue = SHIPPED) -> list[Resource]:
    return [Resource(id=e.id, **e.values(), updated_at=NOW) for e in catalogue.entries]



@pytest.fixture(autouse=True)
def office_hours():
    """A Monday morning in Paris: mediators are at work (their absence changes replies)."""
    with time_machine.travel(NOW, tick=False):
        yield

# -- the shipped catalogue ---------------------------------------------------------------


def test_shipped_catalogue_is_valid_and_covers_every_theme():
    assert SHIPPED.issues == []
    assert len(SHIPPED.entries) >= 25
    assert {e.theme for e in SHIPPED.entries} == set(resources.THEME_IDS)
    for must in ("caf-attestation", "france-travail-inscription", "france-travail-actualisation",
                 "ameli-attestation", "carte-vitale", "impots-declaration", "carte-grise",
                 "permis-conduire", "carte-identite", "passeport", "casier-judiciaire",
                 "franceconnect", "adresse-email", "identite-numerique", "cheque-energie",
                 "c2s", "aide-logement", "prime-activite", "retraite", "mdph", "pix",
                 "les-bons-clics", "imprimer-scanner", "rsa", "service-public-espace",
                 "mes-droits-sociaux"):
        assert must in {e.id for e in SHIPPED.entries}, must


@pytest.mark.parametrize("entry", SHIPPED.entries, ids=lambda e: e.id)
def test_every_shipped_url_is_https_on_the_allow_list(entry):
    parts = urlsplit(entry.url)
    assert parts.scheme == "https"
    host = parts.hostname or ""
    assert any(host == d or host.endswith("." + d) for d in resources.ALLOWED_DOMAINS), host


@pytest.mark.parametrize("entry", SHIPPED.entries, ids=lambda e: e.id)
def test_every_shipped_message_fits_two_sms_segments(entry):
    for language in ("fr", "en"):
        text = entry.texts[language]
        rendered = sms.normalise(resources.message(text["title"], text["text"], entry.url))
        assert sms.segments(rendered) <= 2, (language, rendered)
        assert sms.is_gsm7(rendered), sms.unsupported(rendered)


def test_allow_list_refuses_look_alike_hosts():
    assert resources.host_allowed("https://immatriculation.ants.gouv.fr/x")
    assert resources.host_allowed("https://www.caf.fr")
    assert not resources.host_allowed("https://ants-gouv.fr")
    assert not resources.host_allowed("https://caf.fr.example.com")
    assert not resources.host_allowed("https://notcaf.fr")
    assert resources.url_problem("http://www.caf.fr") is not None
    assert resources.url_problem("https://www.caf.fr/a b") is not None


# -- search ----------------------------------------------------------------------------------

SEARCH_TABLE = [
    ("pole emploi", "france-travail-inscription"),
    ("Pôle Emploi", "france-travail-inscription"),
    ("pole emplois", "france-travail-inscription"),
    ("franse travail", "france-travail-inscription"),
    ("chomage", "france-travail-inscription"),
    ("actualisation", "france-travail-actualisation"),
    ("m'actualiser pole emploi", "france-travail-actualisation"),
    ("actualistion", "france-travail-actualisation"),
    ("je cherche du travail", "france-travail-offres"),
    ("secu", "ameli-attestation"),
    ("sécu", "ameli-attestation"),
    ("attestation secu", "ameli-attestation"),
    ("carte vitale", "carte-vitale"),
    ("carte vital", "carte-vitale"),
    ("j'ai perdu ma carte vitale", "carte-vitale"),
    ("carte grise", "carte-grise"),
    ("cart grise", "carte-grise"),
    ("je veux refaire ma carte grise svp", "carte-grise"),
    ("casier", "casier-judiciaire"),
    ("casier judicaire", "casier-judiciaire"),
    ("extrait de casier", "casier-judiciaire"),
    ("impot", "impots-declaration"),
    ("impôts", "impots-declaration"),
    ("IMPOTS", "impots-declaration"),
    ("inpot", "impots-declaration"),
    ("déclaration impots", "impots-declaration"),
    ("avis d'imposition", "impots-avis"),
    ("apl", "aide-logement"),
    ("APL", "aide-logement"),
    ("aide logement", "aide-logement"),
    ("aide au logement", "aide-logement"),
    ("aide logment", "aide-logement"),
    ("caf", "caf-attestation"),
    ("attestation caf", "caf-attestation"),
    ("rsa", "rsa"),
    ("prime d'activite", "prime-activite"),
    ("cheque energie", "cheque-energie"),
    ("passeport", "passeport"),
    ("pasport", "passeport"),
    ("carte d'identite", "carte-identite"),
    ("cni", "carte-identite"),
    ("permis de conduire", "permis-conduire"),
    ("mutuelle", "c2s"),
    ("cmu", "c2s"),
    ("handicap", "mdph"),
    ("retraite", "retraite"),
    ("france connect", "franceconnect"),
    ("adresse mail", "adresse-email"),
    ("scanner un document", "imprimer-scanner"),
    ("hlm", "logement-social"),
    ("housing benefit", "aide-logement"),
    ("tax return", "impots-declaration"),
    ("criminal record", "casier-judiciaire"),
    ("driving licence", "permis-conduire"),
]


@pytest.mark.parametrize(("query", "expected"), SEARCH_TABLE)
def test_search_finds_the_expected_first_result(query, expected):
    hits = resources.search(rows(), query)
    assert hits, query
    assert hits[0].resource.id == expected
    assert len(hits) <= 3


@pytest.mark.parametrize("query", ["bonjour", "kaf", "zzzz", "ca", "", "   ", "merci"])
def test_search_finds_nothing_for_noise(query):
    assert resources.search(rows(), query) == []


def test_search_offers_at_most_three_choices():
    hits = resources.search(rows(), "carte")
    assert [h.resource.id for h in hits] == ["carte-grise", "carte-identite", "carte-vitale"]


def test_ties_go_to_the_persons_level():
    def entry(ident: str, level: int) -> resources.Entry:
        texts = {"fr": {"title": ident, "text": "t"}, "en": {"title": ident, "text": "t"}}
        return resources.Entry(ident, "numerique", level, "https://www.pix.fr", ["ordinateur"],
                               texts)

    pair = rows(resources.Catalogue(entries=[entry("debutant", 1), entry("avance", 3)]))
    assert [h.resource.id for h in resources.search(pair, "ordinateur", level=1)] == [
        "debutant", "avance"]
    assert [h.resource.id for h in resources.search(pair, "ordinateur", level=3)] == [
        "avance", "debutant"]


# -- the catalogue validator -----------------------------------------------------------------


def test_yaml_syntax_error_names_its_line():
    catalogue = resources.load_file(DATA / "catalogue-syntax-error.yaml")
    assert catalogue.entries == []
    assert [str(i) for i in catalogue.issues] == [
        "line 8: YAML syntax error: expected ',' or ']', but got ':'"
    ]


def test_every_schema_error_is_listed_with_its_line():
    catalogue = resources.load_file(DATA / "catalogue-broken.yaml")
    assert [str(issue) for issue in catalogue.issues] == [
        "line 11: resource 'no-url': missing field 'url'",
        "line 21: resource 'plain-http': url 'http://www.francetravail.fr' must start with"
        " https://",
        "line 29: resource 'phishing': url 'https://ants-gouv.fr.example.com/carte-grise':"
        " ants-gouv.fr.example.com is not an official site on the allow-list (add it under"
        " 'domains:' if you trust it)",
        "line 36: resource 'bad-level': unknown level 4 (1 not at ease, 2 a little, 3 at ease)",
        "line 42: id 'good-entry' is already used on line 3",
        "line 56: resource 'too-long': the French title, text and link need 3 SMS segments"
        " (359 characters); at most 2",
        "line 64: resource 'odd-fields': missing field 'en'",
        "line 65: resource 'odd-fields': unknown theme 'voyages' (one of: emploi, sante,"
        " papiers, argent, impots, numerique)",
        "line 68: resource 'odd-fields': keywords must be a list of words",
        "line 69: resource 'odd-fields': unknown field 'titel'",
        "line 70: resource 'odd-fields': fr: missing text",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "expected a 'resources:' list of entries"),
        ("- just a string\n", "line 1: each resource must be a mapping with id, theme, level…"),
        ("resources: {}\n", "line 1: 'resources' must be a list of entries"),
        ("resources: []\n", "line 1: the catalogue has no resources"),
        ("other: 1\n", "line 1: unknown top-level field 'other'"),
        ("resources:\n  - {id: a, theme: sante, level: 1, url: 'https://www.ameli.fr',\n"
         "     keywords: [], fr: {title: T, text: T}, en: {title: T, text: T}}\n",
         "line 3: resource 'a': keywords must be a list of words"),
        ("resources:\n  - id: a\n    id: b\n", "line 3: field 'id' is given twice"),
        ("domains: [not a domain]\nresources: []\n",
         "line 1: domains must be a list of host names like 'example.fr'"),
    ],
)
def test_catalogue_shapes_that_are_refused(text, expected):
    issues = [str(i) for i in resources.parse(text).issues]
    assert expected in issues


def test_a_catalogue_may_allow_its_own_domain():
    catalogue = resources.load_file(DATA / "catalogue-ok.yaml")
    assert catalogue.issues == []
    town = catalogue.entries[0]
    assert town.url == "https://www.ville-exemple.fr/etat-civil"
    assert town.keywords == ["acte de naissance", "etat civil", "mairie", "extrait de naissance"]


def test_a_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("resources:\n  - id: caf\n    title: Pr\u00e9fecture\n".encode("latin-1"))
    assert [str(i) for i in resources.load_file(path).issues] == [
        "line 3: the file is not UTF-8 text"
    ]


# -- storing: first use, merge, several processes ------------------------------------------


async def count(session, model) -> int:
    return await session.scalar(select(func.count()).select_from(model))


async def test_first_use_loads_the_shipped_catalogue_once(services):
    async with services.sessions() as session, session.begin():
        assert await resources.ensure_loaded(session, NOW) == len(SHIPPED.entries)
        assert await resources.ensure_loaded(session, NOW) == 0
    async with services.sessions() as session:
        assert await count(session, Resource) == len(SHIPPED.entries)
        rsa = await session.get(Resource, "rsa")
    assert rsa is not None and rsa.texts["fr"]["title"] == "RSA"
    assert rsa.updated_at == NOW


async def test_first_use_from_several_processes_at_once(settings):
    engines = [make_engine(settings.database_url) for _ in range(3)]
    try:
        async def load(engine) -> int:
            async with sessionmaker(engine)() as session, session.begin():
                return await resources.ensure_loaded(session, NOW)

        results = await asyncio.gather(*(load(engine) for engine in engines))
        async with sessionmaker(engines[0])() as session:
            stored = await count(session, Resource)
    finally:
        for engine in engines:
            await engine.dispose()
    assert stored == len(SHIPPED.entries)
    assert len(SHIPPED.entries) in results  # one of them loaded it, none failed


async def test_merge_adds_updates_and_keeps_the_rest(services):
    ok = resources.load_file(DATA / "catalogue-ok.yaml")
    async with services.sessions() as session, session.begin():
        await resources.ensure_loaded(session, NOW)
        summary = await resources.merge(session, ok.entries, NOW)
        again = await resources.merge(session, ok.entries, NOW)
    assert (summary.added, summary.updated, summary.unchanged) == (1, 1, 0)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 2)
    async with services.sessions() as session:
        assert await count(session, Resource) == len(SHIPPED.entries) + 1
        rsa = await session.get(Resource, "rsa")
    assert rsa is not None and rsa.texts["fr"]["text"] == "Faites la demande sur caf.fr."
    assert rsa.level == 1


# -- the command line --------------------------------------------------------------------------


def stored_resources(db_url: str) -> int:
    async def go() -> int:
        engine = make_engine(db_url)
        try:
            async with sessionmaker(engine)() as session:
                return await count(session, Resource)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_cli_import_of_a_broken_file_imports_nothing(db_url, no_dotenv):
    result = relais(db_url, "resources", "import", str(DATA / "catalogue-broken.yaml"))
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert errors[0] == "relais: catalogue-broken.yaml: line 11: resource 'no-url':" \
                        " missing field 'url'"
    assert len(errors) == 12
    assert errors[-1] == "relais: catalogue-broken.yaml: nothing imported (11 problem(s))"
    assert result.stdout == ""
    assert stored_resources(db_url) == 0
    syntax = relais(db_url, "resources", "import", str(DATA / "catalogue-syntax-error.yaml"))
    assert syntax.exit_code == 1
    assert "line 8: YAML syntax error" in syntax.stderr
    assert stored_resources(db_url) == 0


def test_cli_import_merges_and_list_shows_the_catalogue(db_url, no_dotenv):
    result = relais(db_url, "resources", "import", str(DATA / "catalogue-ok.yaml"))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "resources: 1 added, 1 updated, 0 unchanged\n"
    listed = relais(db_url, "resources", "list", "--json")
    assert listed.exit_code == 0
    data = json.loads(listed.stdout)
    assert len(data) == len(SHIPPED.entries) + 1
    town = next(item for item in data if item["id"] == "mairie-etat-civil")
    assert town["theme"] == "papiers" and town["level"] == 2
    assert town["texts"]["en"]["title"] == "Birth certificate"
    assert datetime.fromisoformat(town["updated_at"]).utcoffset() is not None
    table = relais(db_url, "resources", "list")
    assert "mairie-etat-civil" in table.stdout
    assert f"{len(SHIPPED.entries) + 1} resources" in table.stdout


def test_cli_list_on_a_fresh_install_loads_the_shipped_catalogue(db_url, no_dotenv):
    first = relais(db_url, "resources", "list", "--json")
    second = relais(db_url, "resources", "list", "--json")
    assert first.exit_code == second.exit_code == 0
    assert len(json.loads(first.stdout)) == len(json.loads(second.stdout)) == len(
        SHIPPED.entries)


def test_cli_import_of_a_missing_file_is_a_usage_error(db_url, no_dotenv):
    result = relais(db_url, "resources", "import", "nowhere.yaml")
    assert result.exit_code == 2


# -- the conversation ----------------------------------------------------------------------------


async def to_menu(dialog: Dialog, language: str, level: int | None = None) -> list:
    """A person who went through onboarding already: straight to the main menu."""
    return await to_menu_as_known(dialog, NOW, "resources", language=language, level=level)


async def events(services, kind: str) -> list[dict]:
    async with services.sessions() as session:
        found = await session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id))
        return [event.value for event in found]


async def test_french_theme_then_resource_then_helpful(services):
    dialog = Dialog(services, who="+33612345678", channel="sms")
    menu = await to_menu(dialog, "fr")
    themes = await choose(dialog, menu, "resources")
    assert Dialog.texts(themes) == [
        "Quel sujet ? Envoyez le numéro, ou écrivez quelques mots, par exemple CAF ou "
        "passeport.\n1. Emploi\n2. Santé\n3. Papiers\n4. Argent et aides\n5. Impôts\n"
        "6. Numérique"
    ]
    papers = await choose(dialog, themes, "papiers")
    assert Dialog.texts(papers)[0].startswith("Papiers : envoyez le numéro de votre choix.\n")
    assert "r:carte-grise" in Dialog.last_choices(papers)
    shown = await choose(dialog, papers, "r:carte-grise")
    assert Dialog.texts(shown) == [
        "Carte grise\nDemande en ligne sur le site officiel de l'ANTS. Un garage agréé peut "
        "aussi le faire pour vous. Attention aux faux sites payants.\n"
        "https://immatriculation.ants.gouv.fr\n\nEst-ce que cela vous a aidé ?\n1. Oui\n2. Non"
    ]  # one SMS of 2 segments: the question joins the page
    done = await choose(dialog, shown, "yes")
    assert Dialog.texts(done)[0].startswith("Tant mieux !\n\nDe quoi avez-vous besoin ?")
    assert await events(services, "resource.helpful") == [
        {"id": "carte-grise", "helpful": True}
    ]


async def test_french_words_then_not_helpful_offers_a_person(services):
    dialog = Dialog(services, who="+33612345678", channel="sms")
    themes = await choose(dialog, await to_menu(dialog, "fr"), "resources")
    found = await dialog.send("pole emploi")
    assert Dialog.texts(found)[0].startswith("Voici ce que j'ai trouvé. Envoyez le numéro.\n"
                                             "1. S'inscrire à France Travail\n")
    assert len(Dialog.last_choices(found)) <= 3
    assert themes  # the themes were offered before the words
    shown = await dialog.send("1")
    assert Dialog.texts(shown)[0].startswith("S'inscrire à France Travail\n")
    offer = await choose(dialog, shown, "no")
    assert Dialog.texts(offer) == ["Voulez-vous qu'une personne vous aide ?\n1. Oui\n2. Non"]
    asked = await choose(dialog, offer, "yes")
    assert Dialog.texts(asked) == ["Merci. Une personne de Relais va vous répondre ici."]
    async with services.sessions() as session:
        ticket = await session.scalar(select(Ticket))
    assert ticket is not None and ticket.source == "resource"
    assert await events(services, "resource.helpful") == [
        {"id": "france-travail-inscription", "helpful": False}
    ]


async def test_one_clear_match_is_sent_at_once(services):
    dialog = Dialog(services)
    await choose(dialog, await to_menu(dialog, "fr"), "resources")
    shown = Dialog.texts(await dialog.send("je veux refaire ma carte grise"))
    assert shown[0].startswith("Carte grise\n")


async def test_nothing_found_twice_offers_a_person(services):
    dialog = Dialog(services)
    await choose(dialog, await to_menu(dialog, "fr"), "resources")
    wrong = Dialog.texts(await dialog.send("9"))  # not on the list: not a search
    assert wrong[0].startswith("Pardon, je n'ai pas compris.")
    first = Dialog.texts(await dialog.send("xylophone"))
    assert first[0].startswith("Pardon, je n'ai rien trouvé pour ces mots. Essayez d'autres"
                               " mots, ou un sujet.\n\nQuel sujet ?")
    second = await dialog.send("banane bleue")
    assert Dialog.texts(second) == [
        "Pardon, je n'ai rien trouvé pour ces mots.\n\n"
        "Voulez-vous qu'une personne vous aide ?\n1. Oui\n2. Non"
    ]
    menu = await choose(dialog, second, "no")
    assert "resources" in Dialog.last_choices(menu)
    async with services.sessions() as session:
        assert await count(session, Ticket) == 0


async def test_a_long_theme_pages_and_every_french_list_fits_two_sms(services):
    dialog = Dialog(services, who="+33612345678", channel="sms")
    themes = await choose(dialog, await to_menu(dialog, "fr"), "resources")
    for theme in resources.THEME_IDS:
        listing = await choose(dialog, themes, theme)
        while True:
            for message in listing:
                assert message.choices and len(message.choices) <= 10
                text = sms.normalise(Dialog.texts([message])[0])
                assert sms.segments(text) <= 2, text
            if "more" not in Dialog.last_choices(listing):
                break
            listing = await choose(dialog, listing, "more")
        themes = await choose(dialog, listing, "topics")
    digital = await choose(dialog, themes, "numerique")
    assert len(Dialog.last_choices(digital)) == 5 + 2  # five resources, more, other topics
    rest = await choose(dialog, digital, "more")
    assert Dialog.last_choices(rest)[-1] == "topics"
    assert len(Dialog.last_choices(rest)) == 2 + 1


async def test_level_orders_a_theme(services):
    dialog = Dialog(services)
    themes = await choose(dialog, await to_menu(dialog, "fr", level=3), "resources")
    digital = await choose(dialog, themes, "numerique")
    assert Dialog.last_choices(digital)[:2] == ["r:identite-numerique", "r:pix"]
    beginner = Dialog(services, who="bob")
    themes = await choose(beginner, await to_menu(beginner, "fr", level=1), "resources")
    digital = await choose(beginner, themes, "numerique")
    assert "r:pix" not in Dialog.last_choices(digital)  # on the second page for beginners


async def test_english_words_get_the_english_page(services):
    dialog = Dialog(services)
    menu = await to_menu(dialog, "en")
    themes = await choose(dialog, menu, "resources")
    assert Dialog.texts(themes)[0].startswith(
        "Which topic? Send the number, or write a few words, for example CAF or passport.\n"
        "1. Work\n2. Health\n3. ID and papers\n4. Money and benefits\n5. Taxes\n"
        "6. Digital skills")
    shown = await dialog.send("tax return")
    assert Dialog.texts(shown) == [
        "Tax return\nEvery spring, declare your income in your personal space (espace "
        "particulier). Help: 0 809 401 401.\nhttps://www.impots.gouv.fr\n\nDid this help?\n"
        "1. Yes\n2. No"
    ]
    done = await dialog.send("yes")
    assert Dialog.texts(done)[0].startswith("Glad it helped.\n\nWhat do you need?")
    assert await events(services, "resource.helpful") == [
        {"id": "impots-declaration", "helpful": True}
    ]


async def test_english_theme_and_back_to_topics(services):
    dialog = Dialog(services)
    themes = await choose(dialog, await to_menu(dialog, "en"), "resources")
    health = await choose(dialog, themes, "sante")
    assert Dialog.texts(health)[0].startswith("Health: send the number of your choice.\n")
    assert "Carte Vitale (health card)" in Dialog.texts(health)[0]
    back = await choose(dialog, health, "topics")
    assert Dialog.texts(back)[0].startswith("Which topic?")
