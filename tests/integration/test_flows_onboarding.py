"""Onboarding and the global keywords, as dialogs, in French and English, on both databases."""

from __future__ import annotations

from sqlalchemy import func, select

from bot.core.types import Inbound
from bot.storage.models import Contact, Outbox, Ticket
from tests.helpers.dialog import Dialog, choose


async def test_first_message_gets_welcome_privacy_and_language_question(services):
    dialog = Dialog(services)
    got = Dialog.texts(await dialog.send("bonjour"))
    assert len(got) == 1  # joined: one SMS to pay for, no WhatsApp pair-rate wait
    welcome, privacy, question = got[0].split("\n\n")
    assert welcome == "Bonjour ! Ici Relais. Nous vous aidons pour vos démarches en ligne."
    assert "OUBLIER" in privacy
    assert question == (
        "Choisissez votre langue : / Choose your language:\n1. Français\n2. English"
    )
    assert Dialog.last_choices(await dialog.send("xx")) == ["fr", "en"]


async def test_french_onboarding_to_menu_and_human(services):
    dialog = Dialog(services)
    offered = await dialog.send("Bonjour")
    level = await choose(dialog, offered, "fr")
    assert Dialog.texts(level)[0].startswith("Êtes-vous à l'aise avec internet")
    postcode = await choose(dialog, level, "skip")
    news = await choose(dialog, postcode, "skip")
    menu = await choose(dialog, news, "skip")
    assert Dialog.texts(menu)[0].startswith("De quoi avez-vous besoin")
    assert "human" in Dialog.last_choices(menu)
    reply = await choose(dialog, menu, "human")
    assert "va vous répondre" in Dialog.texts(reply)[0]
    async with services.sessions() as session:
        tickets = (await session.scalars(select(Ticket))).all()
    assert [(t.source, t.state, t.language) for t in tickets] == [("menu", "open", "fr")]


async def test_english_onboarding_keeps_english(services):
    dialog = Dialog(services)
    offered = await dialog.send("hello")
    level = await choose(dialog, offered, "en")
    assert Dialog.texts(level)[0].startswith("Are you at ease with the internet")
    postcode = await choose(dialog, level, "skip")
    news = await choose(dialog, postcode, "skip")
    menu = await choose(dialog, news, "skip")
    assert Dialog.texts(menu)[0].startswith(
        "What do you need? Send the number.\n1. Talk to a person\n"
    )
    assert Dialog.texts(menu)[0].endswith(". Change language")
    again = await dialog.send("blah")
    assert Dialog.texts(again)[0].startswith("Sorry, I did not understand. Send HELP")
    assert Dialog.texts(again)[0].endswith(". Change language")


async def test_telegram_language_hint_skips_the_question(services):
    dialog = Dialog(services)
    got = await dialog.send("salut", language_hint="en-GB")
    assert Dialog.texts(got)[0].startswith("Hello! This is Relais.")
    assert Dialog.last_choices(got) == ["none", "little", "ease", "skip"]  # ease question


async def test_choice_by_word_number_and_keyword(services):
    dialog = Dialog(services, who="bob")
    await dialog.send("bonjour")
    await dialog.send("Un.")  # "un" is 1: French
    for _question in ("level", "postcode", "news"):
        menu = await dialog.send("passer")
    assert "human" in Dialog.last_choices(menu)
    assert "répondre" in Dialog.texts(await dialog.send("PARLER"))[0]


async def test_aide_from_anywhere_makes_one_ticket(services):
    dialog = Dialog(services)
    await dialog.send("bonjour")
    first = Dialog.texts(await dialog.send(" aide! "))
    assert first == ["Merci. Une personne de Relais va vous répondre ici."]
    second = Dialog.texts(await dialog.send("AIDE"))
    assert second == ["Nous avons votre demande. Une personne va vous répondre ici."]
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Ticket)) == 1


async def test_two_misunderstandings_offer_a_human_ticket_only_on_yes(services):
    dialog = Dialog(services)
    offered = await dialog.send("bonjour")
    await choose(dialog, offered, "fr")
    first = Dialog.texts(await dialog.send("qsdf"))
    assert first[0].startswith("Pardon, je n'ai pas compris")
    offer = await dialog.send("azerty")
    assert Dialog.texts(offer)[0].startswith("Voulez-vous parler à une personne ?")
    menu = await choose(dialog, offer, "no")
    assert "human" in Dialog.last_choices(menu)
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Ticket)) == 0
    await dialog.send("zzz")
    offer = await dialog.send("zzz")
    await choose(dialog, offer, "yes")
    async with services.sessions() as session:
        ticket = await session.scalar(select(Ticket))
    assert ticket is not None and ticket.source == "misunderstood"


async def test_stop_confirms_once_then_silence_until_start(services):
    dialog = Dialog(services)
    await dialog.send("bonjour")
    stop = Dialog.texts(await dialog.send("stop."))
    assert stop == [
        "Vous ne recevrez plus de messages. Écrivez START pour les recevoir à nouveau."
    ]
    assert await dialog.send("STOP") == []
    assert await dialog.send("bonjour") == []
    assert await dialog.send("aide") == []
    back = Dialog.texts(await dialog.send("Start"))
    assert back[0].startswith("Bon retour. Vous allez à nouveau recevoir nos messages.\n\n")
    assert "De quoi avez-vous besoin" in back[0]


async def test_stop_svp_is_not_stop(services):
    dialog = Dialog(services)
    await dialog.send("bonjour")
    got = Dialog.texts(await dialog.send("stop svp"))
    assert got and not got[0].startswith("Vous ne recevrez plus")


async def test_arret_with_accent_stops_and_cancels_queued_rows(services):
    dialog = Dialog(services)
    await services.engine.handle(Inbound("terminal", "terminal:alice", "bonjour"))
    await dialog.send("ARRÊT")
    async with services.sessions() as session:
        statuses = sorted((await session.scalars(select(Outbox.status))).all())
        contact = await session.scalar(select(Contact))
    assert contact.opted_out_at is not None
    assert statuses.count("cancelled") >= 1 and "queued" not in statuses


async def test_language_keyword_switches_language(services):
    dialog = Dialog(services)
    offered = await dialog.send("bonjour")
    await choose(dialog, offered, "fr")
    question = await dialog.send("langue")
    menu = await choose(dialog, question, "en")
    assert Dialog.texts(menu)[0].startswith("What do you need?")


async def test_menu_keyword_and_unknown_booking(services):
    dialog = Dialog(services)
    offered = await dialog.send("bonjour")
    await choose(dialog, offered, "fr")
    assert Dialog.texts(await dialog.send("Menu"))[0].startswith("De quoi avez-vous besoin")
    got = Dialog.texts(await dialog.send("annuler"))
    assert got[0].startswith("Vous n'avez pas de rendez-vous téléphonique.\n\nDe quoi")


async def test_telegram_start_with_payload_begins_onboarding(services):
    dialog = Dialog(services, who="123456", channel="telegram")
    got = Dialog.texts(await dialog.send("/start campagne-2026"))
    assert got[0].startswith("Bonjour ! Ici Relais")
    again = Dialog.texts(await dialog.send("/start"))
    assert again[0].startswith("Bonjour ! Ici Relais")


async def test_duplicate_provider_id_is_answered_once(services):
    from bot.engine import Outcome

    dialog = Dialog(services)
    first = await services.engine.handle(
        Inbound("terminal", "terminal:alice", "bonjour", provider_id="SM1"))
    second = await services.engine.handle(
        Inbound("terminal", "terminal:alice", "bonjour", provider_id="SM1"))
    assert (first.outcome, second.outcome) == (Outcome.WRITTEN, Outcome.DUPLICATE)
    await dialog.drain()
    assert len(dialog.recorder.sent) == 1
