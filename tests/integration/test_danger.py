"""Danger words: the matching table (true and false cases, SMS spellings, idioms that
cancel only their own words), then dialogs on SQLite and PostgreSQL: an urgent ticket, every
on-duty staff member told at once, the numbers of what was found for the person, a neutral
first line, and STOP. The corpus figures are in ``tests/unit/test_danger_corpus.py``."""

from __future__ import annotations

import pytest
import time_machine

from bot.core import sms
from bot.core.i18n import Translator
from bot.delivery.outbox import OPTOUT_KIND
from bot.domain import danger
from bot.flows.escalation import emergency_numbers
from bot.storage.models import Contact, Outbox, Ticket
from tests.helpers.factories import MONDAY_10, Room, add, rows

DANGER_CASES = [
    # French
    ("Mon mari me frappe", "violence"),
    ("il m'a frappée hier soir", "violence"),
    ("Il M’A FRAPPÉE !!", "violence"),
    ("il ma frappé", "violence"),
    ("il m a frapé", "violence"),
    ("mon copain me bat", "violence"),
    ("ils m'ont tabassé", "violence"),
    ("il m a étranglée", "violence"),
    ("je suis victime de violences conjugales", "violence"),
    ("violence à la maison", "violence"),
    ("mon mari est très violent", "violence"),
    ("g peur de lui", "violence"),
    ("il menace de me tuer", "threat"),
    ("il me menace avec un couteau", "threat"),
    ("il me menace", "threat"),
    ("j'ai reçu des menaces de mort", "threat"),
    ("il veut me tuer", "threat"),
    ("je pense au suicide", "suicide"),
    ("j'ai envie de mourir", "suicide"),
    ("je veux me tuer", "suicide"),
    ("je n'ai plus envie de vivre", "suicide"),
    ("je veux en finir", "suicide"),
    ("jveux en finir", "suicide"),
    ("je suis sucidaire", "suicide"),  # a typo, corrected
    ("je dors dehors", "street"),
    ("on dort dans la voiture avec les enfants", "street"),
    ("je suis à la rue depuis lundi", "street"),
    ("jsuis a la rue", "street"),
    ("chui a la rue", "street"),
    ("on m'a mis dehors", "street"),
    ("je suis sans abri", "street"),
    ("je n'ai nulle part où dormir ce soir", "street"),
    ("je n'ai rien à manger", "hunger"),
    ("mes enfants ont faim", "hunger"),
    ("j'ai pas mangé depuis deux jours", "hunger"),
    ("mon enfant est en danger", "child"),
    ("mon fils est en danger", "child"),
    ("il bat mes enfants", "child"),
    ("maltraitance sur mon fils", "child"),
    ("mon mari a fait un malaise, il ne respire plus", "medical"),
    ("j'ai avalé toute la boite de cachets", "medical"),
    ("je suis en danger", "distress"),
    ("au secours", "distress"),
    ("aidez-moi vite", "distress"),
    # English
    ("he hits me", "violence"),
    ("My husband beat me last night", "violence"),
    ("she keeps hitting me", "violence"),
    ("domestic violence", "violence"),
    ("he threatened to kill me", "threat"),
    ("he's going to kill me", "threat"),
    ("I want to kill myself", "suicide"),
    ("i don't want to live anymore", "suicide"),
    ("I'm sleeping rough", "street"),
    ("we are homeless", "street"),
    ("I have nothing to eat", "hunger"),
    ("the kids are hungry", "hunger"),
    ("she collapsed and isn't breathing", "medical"),
    ("I am in danger", "distress"),
    # Arabic
    ("زوجي يضربني", "violence"),
    ("وأنا أنام في الشارع", "street"),
    ("أفكر في الانتحار", "suicide"),
    ("يهددني كل يوم", "threat"),
    ("ليس لدي طعام", "hunger"),
    ("أنا في خطر", "distress"),
    # Other languages: every lexicon is tried on every message
    ("mi marido me pega", "violence"),
    ("o meu marido bate-me", "violence"),
    ("sotul meu ma bate", "violence"),
    ("чоловік мене б'є", "violence"),
    ("муж меня бьёт", "violence"),
    ("mąż mnie bije", "violence"),
    ("kocam beni dövüyor", "violence"),
    ("شوهرم منو میزنه", "violence"),
]

SAFE_CASES = [
    "frapper à la porte de la CAF",
    "ce qui me frappe, c'est le délai",
    "je me cogne toujours à ce site",
    "je me bats pour mon dossier",
    "je vais mourir de rire",
    "mort de rire",
    "je veux mourir de honte",
    "ce formulaire me tue",
    "mon propriétaire me menace d'expulsion",
    "il me manque une pièce justificative",
    "un film violent",
    "je rue dans les brancards",
    "la rue de la Paix",
    "je suis à la rue Victor Hugo",
    "mon mari me bat aux cartes",
    "je n'arrive pas à manger ma soupe, trop chaude",
    "le site CAF est en panne",
    "au secours ce site est trop compliqué mdr",
    "c'est urgent pour mon dossier caf",
    "He beat me at chess",
    "hit me up when you can",
    "my mum will kill me if I'm late",
    "I'm hungry for news",
    "no food allergies",
    "the website is dead",
    "مرحبا أحتاج مساعدة في ملف الضرائب",
    "AIDE",
    "",
    "   ",
]


@pytest.mark.parametrize(("text", "category"), DANGER_CASES)
def test_danger_words_are_found(text, category):
    found = danger.match(text)
    assert found is not None, text
    assert category in found.categories, (text, found)
    assert found.category == found.categories[0]


@pytest.mark.parametrize("text", SAFE_CASES)
def test_everyday_phrases_are_not_danger(text):
    assert danger.match(text) is None


def test_an_idiom_cancels_only_its_own_words():
    found = danger.match("je suis à la rue Victor Hugo, il m'a frappée")
    assert found is not None and found.categories == ("violence",)
    found = danger.match("mon mari me bat aux cartes mais mon fils me frappe")
    assert found is not None and found.categories == ("violence",)


def test_laughter_cancels_hyperbole_but_never_blows_or_threats():
    assert danger.match("je vais me suicider mdr") is None
    assert danger.match("je suis morte de rire") is None
    assert danger.match("il m'a frappée mdr").categories == ("violence",)
    assert danger.match("il veut me tuer lol").categories == ("threat",)


def test_all_categories_are_found_in_a_stable_order():
    found = danger.match("je dors dehors et j'ai rien mangé depuis 2 jours, il me frappe")
    assert found is not None
    assert found.categories == ("violence", "street", "hunger")
    assert found.language == "fr"


def test_sms_spelling_is_written_out():
    lexicon = next(lx for lx in danger.lexicons() if lx.language == "fr")
    tokens = danger.base_tokens("jsuis a la ru, g faim, il ma frapé")
    words = [w.text for w in lexicon.words(tokens)]
    assert words == ["je", "suis", "a", "la", "rue", "je", "ai", "faim", "il", "ma", "frape"]


def test_lexicons_are_read_at_first_use_and_cover_every_language(tmp_path):
    assert [lx.language for lx in danger.lexicons()] == list(danger.LANGUAGES)
    for lexicon in danger.lexicons():
        assert {c for c, _pattern in lexicon.patterns} == set(danger.CATEGORIES), lexicon.language
    (tmp_path / "xx.yaml").write_text("categories:\n  danger: [\"x\"]\n", encoding="utf-8")
    with pytest.raises(danger.LexiconError, match="unknown categories"):
        danger.load("xx", tmp_path)
    (tmp_path / "yy.yaml").write_text("categories:\n  threat: [\"{nope} x\"]\n",
                                      encoding="utf-8")
    with pytest.raises(danger.LexiconError, match="unknown set"):
        danger.load("yy", tmp_path)


def test_each_category_gets_its_numbers_within_two_sms_segments():
    ctx = type("Ctx", (), {"_": Translator("fr")})()
    assert emergency_numbers(ctx, ("violence",)) == [
        "Voici des numéros utiles, gratuits, jour et nuit :\n17 ou 112 : police, secours\n"
        "3919 : violences faites aux femmes, anonyme"]
    assert emergency_numbers(ctx, ("distress",)) == [
        "Voici des numéros utiles, gratuits, jour et nuit :\n17 ou 112 : police, secours\n"
        "114 : par SMS si vous ne pouvez pas parler"]
    assert "115 : hébergement d'urgence" in emergency_numbers(ctx, ("hunger",))[0]
    for categories in [(), danger.CATEGORIES, *[(c,) for c in danger.CATEGORIES]]:
        for language in ("fr", "en"):
            messages = emergency_numbers(ctx, categories, language)
            assert first_lines_are_neutral(messages)
            for message in messages:
                assert sms.segments(sms.normalise(message)) <= 2
                assert not set(message) & set("’«»…")


# -- dialogs ------------------------------------------------------------------------------------

FIRST_FR = "Voici des numéros utiles, gratuits, jour et nuit :\n"
POLICE_FR = "17 ou 112 : police, secours\n"
NUMBERS_VIOLENCE_FR = (FIRST_FR + POLICE_FR + "114 : par SMS si vous ne pouvez pas parler\n"
                       "3919 : violences faites aux femmes, anonyme")
NUMBERS_THREAT_FR = FIRST_FR + "17 ou 112 : police, secours"
NEUTRAL_BAD = ("violen", "frapp", "danger", "suicid", "urgen", "police", "menac", "tuer")


def first_lines_are_neutral(messages: list[str]) -> bool:
    return all(not any(word in m.splitlines()[0].lower() for word in NEUTRAL_BAD)
               for m in messages)


async def test_french_danger_words_make_an_urgent_ticket_and_give_the_numbers(services):
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        await add(services, "terminal:bob", "Bob")
        await add(services, "terminal:carol", "Carol", on_duty=False)
        got = await room.send("marie", "Mon mari me frappe, j'ai peur", name="Marie")
        # violence and distress: 17/112, 114 and 3919
        assert got["marie"] == [NUMBERS_VIOLENCE_FR + "\n\nMerci de nous l'avoir dit. Une "
                                "personne de Relais va vous répondre ici très vite."]
        assert first_lines_are_neutral(got["marie"])
        assert set(got) == {"marie", "alice", "bob"}  # at once, without the scheduler
        assert got["alice"][0] == ("URGENT : une personne est peut-être en danger.\n"
                                   "#1 URGENT 0 min - Marie (terminal): Mon mari me frappe, "
                                   "j'ai peur\nPour répondre : /prendre 1")
        got = await room.send("marie", "il me frappe encore")
        assert got == {}  # saved on the ticket; neither the numbers nor the alert again
        got = await room.send("bob", "/prendre 1")
        assert got["marie"] == ["Bob, de Relais, vous répond. Écrivez votre message ici."]
    (ticket,) = await rows(services, Ticket)
    assert (ticket.priority, ticket.source, ticket.topic) == ("urgent", "danger", "violence")


async def test_danger_words_during_a_conversation_raise_the_ticket(services):
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        await add(services, "terminal:bob", "Bob")
        await room.send("paul", "AIDE", name="Paul")
        await room.send("alice", "/prendre 1")
        got = await room.send("paul", "il menace de me tuer")
        assert got["alice"] == ["#1 Paul: il menace de me tuer"]  # the holder reads it
        assert got["bob"][0].startswith("URGENT : une personne est peut-être en danger.\n#1 ")
        assert got["paul"] == [NUMBERS_THREAT_FR]  # numbers; the mediator is already there
    (ticket,) = await rows(services, Ticket)
    assert (ticket.priority, ticket.state) == ("urgent", "taken")


async def test_a_cry_for_help_alone_opens_an_urgent_ticket(services):
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        got = await room.send("lea", "au secours", name="Léa")
        assert got["lea"][0].startswith(FIRST_FR + POLICE_FR + "114 : par SMS")
        assert got["alice"][0].startswith("URGENT")
    (ticket,) = await rows(services, Ticket)
    assert (ticket.priority, ticket.source, ticket.topic) == ("urgent", "danger", "distress")


async def test_danger_words_in_english_and_arabic(services):
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        got = await room.send("john", "I want to kill myself", name="John", language="en")
        (text,) = got["john"]
        assert text == ("Here are useful numbers, free, day and night:\n"
                        "3114: suicidal thoughts\n\n"
                        "Thank you for telling us. A person from Relais will answer you here "
                        "very soon.")
        assert first_lines_are_neutral(got["john"])
        got = await room.send("amina", "زوجي يضربني", name="Amina")
        assert got["amina"][0].startswith(FIRST_FR + POLICE_FR + "3919")  # no Arabic catalog
        assert got["alice"][0].startswith("URGENT")
    tickets = await rows(services, Ticket)
    assert [(t.priority, t.topic) for t in tickets] == [("urgent", "suicide"),
                                                         ("urgent", "violence")]


async def test_everyday_words_stay_in_the_flows_and_stop_holds(services):
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        got = await room.send("marie", "Je vais frapper à la porte de la CAF")
        assert got["marie"][0].startswith("Bonjour ! Ici Relais.")
        assert await rows(services, Ticket) == []
        await room.send("marie", "STOP")
        got = await room.send("marie", "je dors dehors")
        assert "marie" not in got  # a terminal is no channel that writes after STOP
        assert got["alice"][0].startswith("URGENT")  # but staff know
    (contact,) = await rows(services, Contact, Contact.name.is_(None))
    assert contact.opted_out_at is not None
    assert [t.priority for t in await rows(services, Ticket)] == ["urgent"]


async def test_after_stop_the_numbers_still_go_out_by_sms_and_nothing_else(services):
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        await room.send("+33612345678", "bonjour", channel="sms")
        await room.send("+33612345678", "STOP", channel="sms")
        got = await room.send("+33612345678", "on m'a mis dehors, je dors dehors ce soir",
                              channel="sms")
        assert got["+33612345678"] == [FIRST_FR + "115 : hébergement d'urgence"]
        assert got["alice"][0].startswith("URGENT")
        got = await room.send("+33612345678", "il fait froid", channel="sms")
        assert got == {}  # STOP holds for everything else
    (contact,) = await rows(services, Contact, Contact.name.is_(None))
    assert contact.opted_out_at is not None  # STOP still set: only START lifts it
    kinds = [r.kind for r in await rows(services, Outbox, Outbox.contact_id == contact.id)]
    assert kinds[-1] == OPTOUT_KIND
