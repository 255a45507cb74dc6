"""Danger words: the matching table (true and false cases in French, English and Arabic),
then dialogs on SQLite and PostgreSQL: an urgent ticket, every on-duty staff member told at
once, the emergency numbers for the person, a neutral first line."""

from __future__ import annotations

import pytest
import time_machine

from bot import danger
from bot.storage.models import Contact, Ticket
from tests.test_staff_commands import MONDAY_10, Room, add, rows

DANGER_CASES = [
    # French
    ("Mon mari me frappe", "violence"),
    ("il m'a frappée hier soir", "violence"),
    ("Il M’A FRAPPÉE !!", "violence"),
    ("mon copain me bat", "violence"),
    ("ils m'ont tabassé", "violence"),
    ("il m a étranglée", "violence"),
    ("je suis victime de violences conjugales", "violence"),
    ("violence à la maison", "violence"),
    ("mon mari est très violent", "violence"),
    ("il menace de me tuer", "threat"),
    ("il me menace avec un couteau", "threat"),
    ("il me menace", "threat"),
    ("j'ai reçu des menaces de mort", "threat"),
    ("il veut me tuer", "threat"),
    ("je pense au suicide", "suicide"),
    ("j'ai envie de mourir", "suicide"),
    ("je veux me tuer", "suicide"),
    ("je n'ai plus envie de vivre", "suicide"),
    ("je dors dehors", "street"),
    ("on dort dans la voiture avec les enfants", "street"),
    ("je suis à la rue depuis lundi", "street"),
    ("je suis sans abri", "street"),
    ("je n'ai nulle part où dormir ce soir", "street"),
    ("je n'ai rien à manger", "hunger"),
    ("mes enfants ont faim", "hunger"),
    ("j'ai pas mangé depuis deux jours", "hunger"),
    ("mon enfant est en danger", "child"),
    ("maltraitance sur mon fils", "child"),
    ("je suis en danger", "danger"),
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
    ("I am in danger", "danger"),
    # Arabic
    ("زوجي يضربني", "violence"),
    ("وأنا أنام في الشارع", "street"),
    ("أفكر في الانتحار", "suicide"),
    ("يهددني كل يوم", "threat"),
    ("ليس لدي طعام", "hunger"),
    ("أنا في خطر", "danger"),
]

SAFE_CASES = [
    "frapper à la porte de la CAF",
    "ce qui me frappe, c'est le délai",
    "je me cogne toujours à ce site",
    "je me bats pour mon dossier",
    "je vais mourir de rire",
    "mon propriétaire me menace d'expulsion",
    "il me manque une pièce justificative",
    "un film violent",
    "je rue dans les brancards",
    "la rue de la Paix",
    "je n'arrive pas à manger ma soupe, trop chaude",
    "le site CAF est en panne",
    "He beat me at chess",
    "hit me up when you can",
    "my mum will kill me if I'm late",
    "I'm hungry for news",
    "no food allergies",
    "the website is dead",
    "مرحبا أحتاج مساعدة في ملف الضرائب",
    "AIDE",
    "",
]


@pytest.mark.parametrize(("text", "category"), DANGER_CASES)
def test_danger_words_are_found(text, category):
    found = danger.match(text)
    assert found is not None, text
    assert found.category == category


@pytest.mark.parametrize("text", SAFE_CASES)
def test_everyday_phrases_are_not_danger(text):
    assert danger.match(text) is None


# -- dialogs ------------------------------------------------------------------------------------

NUMBERS_FR = (
    "Voici des numéros utiles, gratuits, jour et nuit :\n"
    "17 ou 112 : police, secours\n"
    "15 : urgence médicale\n"
    "3919 : violences faites aux femmes, anonyme\n"
    "115 : hébergement d'urgence\n"
    "114 : par SMS si vous ne pouvez pas parler\n"
    "3114 : idées de suicide\n"
    "119 : enfant en danger"
)
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
        assert got["marie"] == [NUMBERS_FR + "\n\nMerci de nous l'avoir dit. Une personne de "
                                "Relais va vous répondre ici très vite."]
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
        assert got["paul"] == [NUMBERS_FR]  # numbers; the mediator is already there
    (ticket,) = await rows(services, Ticket)
    assert (ticket.priority, ticket.state) == ("urgent", "taken")


async def test_danger_words_in_english_and_arabic(services):
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        got = await room.send("john", "I want to kill myself", name="John", language="en")
        (text,) = got["john"]
        assert text.startswith("Here are useful numbers, free, day and night:\n17 or 112: ")
        assert "3114: suicidal thoughts" in text
        assert text.endswith("A person from Relais will answer you here very soon.")
        assert first_lines_are_neutral(got["john"])
        got = await room.send("amina", "زوجي يضربني", name="Amina")
        assert got["amina"][0].startswith(NUMBERS_FR)  # no Arabic catalog yet: French
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
        assert "marie" not in got  # STOP holds: nothing is sent to her
        assert got["alice"][0].startswith("URGENT")  # but staff know
    (contact,) = await rows(services, Contact, Contact.name.is_(None))
    assert contact.opted_out_at is not None
    assert [t.priority for t in await rows(services, Ticket)] == ["urgent"]
