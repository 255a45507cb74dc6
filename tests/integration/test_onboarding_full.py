"""The whole onboarding as dialogs, in French and English, on SQLite and PostgreSQL: ease with
digital tools, postcode (retried once, Réunion's time zone), the centre's news, a skip at
every step, and AIDE in the middle."""

from __future__ import annotations

from sqlalchemy import select

from bot.app import Services
from bot.storage.models import Consent, Contact, Ticket
from tests.helpers.dialog import Dialog, choose

LEVEL_FR = (
    "Êtes-vous à l'aise avec internet et le téléphone ?\n1. Pas du tout\n2. Un peu\n"
    "3. Oui, à l'aise\n4. Passer"
)
POSTCODE_FR = (
    "Quel est votre code postal ? Il nous aide à trouver de l'aide près de chez vous.\n"
    "1. Passer"
)
NEWS_FR = (
    "Voulez-vous recevoir les nouvelles de Relais ? (ateliers, distributions)\n1. Oui\n"
    "2. Non\n3. Passer"
)
NEWS_EN = "Do you want news from Relais? (workshops, distributions)\n1. Yes\n2. No\n3. Skip"


async def person(services: Services) -> Contact:
    async with services.sessions() as session:
        found = await session.scalar(select(Contact))
        assert found is not None
        return found


async def consents(services: Services) -> list[tuple[str, bool, str]]:
    async with services.sessions() as session:
        rows = (await session.scalars(select(Consent).order_by(Consent.id))).all()
    return [(c.purpose, c.granted, c.source) for c in rows]


async def test_french_onboarding_answering_everything(services):
    dialog = Dialog(services)
    level = await choose(dialog, await dialog.send("bonjour"), "fr")
    assert Dialog.texts(level) == [LEVEL_FR]
    postcode = await choose(dialog, level, "little")
    assert Dialog.texts(postcode) == [POSTCODE_FR]
    news = await dialog.send("97400")
    assert Dialog.texts(news) == [NEWS_FR]
    menu = Dialog.texts(await choose(dialog, news, "yes"))
    assert menu[0].startswith("Merci. Vous recevrez nos nouvelles.")
    assert "De quoi avez-vous besoin ? Envoyez le numéro.\n1. Parler à une personne" in menu[-1]
    contact = await person(services)
    assert (contact.language, contact.level, contact.postcode, contact.timezone) == (
        "fr", 2, "97400", "Indian/Reunion"
    )
    assert await consents(services) == [("news", True, "chat:terminal")]


async def test_english_onboarding_skipping_every_step(services):
    dialog = Dialog(services)
    level = await choose(dialog, await dialog.send("hello"), "en")
    assert Dialog.texts(level) == [
        "Are you at ease with the internet and phones?\n1. Not at all\n2. A little\n"
        "3. Yes, at ease\n4. Skip"
    ]
    postcode = await choose(dialog, level, "skip")  # the button
    assert Dialog.texts(postcode) == [
        "What is your postcode? It helps us find help near you.\n1. Skip"
    ]
    news = await dialog.send("Skip.")  # the word
    assert Dialog.texts(news) == [NEWS_EN]
    menu = await dialog.send("3")  # the number
    assert Dialog.texts(menu)[0].startswith("What do you need? Send the number.")
    contact = await person(services)
    assert (contact.language, contact.level, contact.postcode, contact.timezone) == (
        "en", None, None, "Europe/Paris"
    )
    assert await consents(services) == []


async def test_skipping_the_language_keeps_french(services):
    dialog = Dialog(services)
    await dialog.send("bonjour")
    assert Dialog.texts(await dialog.send("passer")) == [LEVEL_FR]
    assert (await person(services)).language is None


async def test_invalid_postcode_is_asked_again_once_kindly_then_skipped(services):
    dialog = Dialog(services)
    level = await choose(dialog, await dialog.send("bonjour"), "fr")
    await choose(dialog, level, "none")
    again = Dialog.texts(await dialog.send("750"))
    assert again == [
        "Pardon, un code postal a 5 chiffres, comme 75011. Pouvez-vous le renvoyer ?\n"
        "1. Passer"
    ]
    skipped = Dialog.texts(await dialog.send("Paris"))
    assert skipped == ["Pas de souci, on passe cette question.\n\n" + NEWS_FR]
    assert Dialog.texts(await dialog.send("non"))[0].startswith("De quoi avez-vous besoin")
    contact = await person(services)
    assert (contact.level, contact.postcode) == (1, None)
    assert await consents(services) == [("news", False, "chat:terminal")]


async def test_postcode_given_right_the_second_time(services):
    dialog = Dialog(services)
    level = await choose(dialog, await dialog.send("hello"), "en")
    await choose(dialog, level, "ease")
    again = Dialog.texts(await dialog.send("1300"))
    assert again[0].startswith("Sorry, a postcode has 5 digits, like 75011.")
    assert Dialog.texts(await dialog.send("It is 13 001")) == [NEWS_EN]
    menu = await dialog.send("no")
    assert Dialog.texts(menu)[0].startswith("What do you need?")
    contact = await person(services)
    assert (contact.level, contact.postcode, contact.timezone) == (3, "13001", "Europe/Paris")
    assert await consents(services) == [("news", False, "chat:terminal")]


async def test_aide_in_the_middle_reaches_a_human_with_the_level(services):
    dialog = Dialog(services)
    level = await choose(dialog, await dialog.send("bonjour"), "fr")
    await choose(dialog, level, "none")
    got = Dialog.texts(await dialog.send("AIDE"))
    assert got == ["Merci. Une personne de Relais va vous répondre ici."]
    async with services.sessions() as session:
        ticket = await session.scalar(select(Ticket))
    assert ticket is not None and (ticket.source, ticket.level) == ("keyword", 1)


async def test_language_keyword_later_goes_back_to_the_menu(services):
    dialog = Dialog(services)
    level = await choose(dialog, await dialog.send("bonjour"), "fr")
    menu = await choose(dialog, await choose(dialog, await choose(dialog, level, "skip"),
                                             "skip"), "skip")
    asked = await choose(dialog, menu, "language")
    assert Dialog.texts(await choose(dialog, asked, "en"))[0].startswith("What do you need?")
