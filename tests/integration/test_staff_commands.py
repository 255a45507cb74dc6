"""Staff commands from a chat, as dialogs through the real engine and outbox on SQLite and
PostgreSQL: a citizen and mediators on the terminal (and SMS) channel, each reading what
they received. The cross-channel story through the providers is ``test_queue_e2e.py``."""

from __future__ import annotations

import re
from datetime import timedelta

import time_machine
from sqlalchemy import select

from bot.core.types import Media
from bot.storage.models import Contact, Event, Slot, Staff, Ticket, TicketNote
from tests.helpers.factories import MONDAY_10, Room, add, rows

# -- a morning of the queue ---------------------------------------------------------------------


async def test_escalate_notify_take_relay_note_transfer_close_in_french(services):
    with time_machine.travel(MONDAY_10, tick=False) as clock:
        room = Room(services)
        await add(services, "terminal:alice", "Alice Martin")
        await add(services, "terminal:bob", "Bob Durand")
        await add(services, "terminal:carol", "Carol Petit", on_duty=False)

        got = await room.send("marie", "AIDE", name="Marie Dupont")
        assert got == {"marie": ["Merci. Une personne de Relais va vous répondre ici."]}
        assert await room.send("marie", "J'ai un souci avec la CAF") == {}

        got = await room.jobs()  # the batched notice: on-duty staff only
        assert set(got) == {"alice", "bob"}
        assert got["alice"] == [
            "Nouveau dans la file :\n"
            "#1 0 min - Marie (terminal): J'ai un souci avec la CAF\n"
            "Pour répondre : /prendre N"
        ]
        clock.shift(timedelta(minutes=3))

        got = await room.send("alice", "/file")
        assert got == {"alice": [
            "En attente : 1\n#1 3 min - Marie (terminal): J'ai un souci avec la CAF\n"
            "Pour répondre : /prendre N"
        ]}

        got = await room.send("alice", "/prendre 1")
        assert got["marie"] == ["Alice, de Relais, vous répond. Écrivez votre message ici."]
        summary = got["alice"][0]
        assert summary.startswith("#1 est à vous.\n#1 3 min - Marie (terminal)")
        assert "Derniers messages :\n10:00 Marie: AIDE\n10:00 Marie: J'ai un souci" in summary

        got = await room.send("bob", "/take 1")
        assert got == {"bob": ["#1 a déjà été prise par Alice Martin."]}

        clock.shift(timedelta(minutes=1))
        got = await room.send("alice", "Bonjour Marie, je regarde votre dossier.")
        assert got == {"marie": ["Alice : Bonjour Marie, je regarde votre dossier."]}
        got = await room.send("marie", "Merci beaucoup")
        assert got == {"alice": ["#1 Marie: Merci beaucoup"]}

        got = await room.send("alice", "/note 1 attestation a envoyer")
        assert got == {"alice": ["Note ajoutée à #1. La personne ne la voit pas."]}
        history = (await room.send("alice", "/historique 1"))["alice"][0]
        assert history.splitlines()[0] == "Historique de #1 :"
        assert "10:04 Marie: Merci beaucoup" in history
        assert "10:04 > Alice : Bonjour Marie, je regarde votre dossier." in history
        assert "10:04 [note] Alice Martin : attestation a envoyer" in history
        assert "10:03 Alice Martin a pris la demande" in history

        got = await room.send("alice", "/transferer 1 terminal:bob")
        assert got["marie"] == ["Bob, de Relais, vous répond maintenant."]
        assert got["alice"] == ["#1 transmise à Bob Durand."]
        assert got["bob"][0].startswith("Alice Martin vous a transmis #1.\n")
        assert "[note] Alice Martin : attestation a envoyer" in got["bob"][0]
        assert await room.send("alice", "encore moi") == {"alice": [
            "Vous ne suivez aucune demande : ce message n'a pas été envoyé. /file montre qui "
            "attend, /aide les commandes."
        ]}
        got = await room.send("marie", "D'accord")
        assert got == {"bob": ["#1 Marie: D'accord"]}
        got = await room.send("bob", "#1 Voici votre attestation.")
        assert got == {"marie": ["Bob : Voici votre attestation."]}

        got = await room.send("bob", "/fermer 1 résolu attestation envoyée")
        assert got == {"marie": ["Est-ce que nous vous avons aidé ?\n1. Oui\n2. Non"],
                       "bob": ["#1 est fermée. Merci !"]}
        got = await room.send("marie", "1")
        assert got == {"marie": ["Merci ! Écrivez-nous quand vous voulez."]}

    (ticket,) = await rows(services, Ticket)
    assert (ticket.state, ticket.outcome) == ("closed", "resolved")  # typed text: a note
    answers = [e.value for e in await rows(services, Event, Event.kind == "ticket.satisfaction")]
    assert answers == [{"answer": "yes"}]
    told = room.everything_to("marie")
    for secret in ("Martin", "Durand", "Petit", "alice", "bob", "terminal", "attestation a"):
        assert secret not in told  # no staff address, full name, or note reaches her


async def test_after_a_close_the_next_message_starts_fresh(services):
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        await room.send("marie", "AIDE")
        await room.send("alice", "/take 1")
        await room.send("alice", "/close 1 1")
        got = await room.send("marie", "bonjour")
        assert got["marie"][0].startswith("De quoi avez-vous besoin ? Envoyez le numéro.\n1. ")
        assert "alice" not in got
    assert [t.state for t in await rows(services, Ticket)] == ["closed"]
    assert await rows(services, Event, Event.kind == "ticket.satisfaction") == []


OUTCOME_LIST = ("1. résolu\n2. orienté vers un partenaire\n3. rendez-vous sur place\n"
                "4. rappel prévu\n5. injoignable\n6. plus besoin\n7. autre\n"
                "Un texte après le numéro est gardé en note sur la demande.")


async def test_close_takes_an_outcome_of_the_list_and_keeps_text_as_a_note(services):
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        await add(services, "terminal:bob", "Bob", role="coordinator", language="en")
        await room.send("marie", "AIDE")
        await room.send("alice", "/prendre 1")
        for command in ("/fermer 1", "/fermer 1 dossier mis à jour", "/fermer 1 9 merci"):
            got = await room.send("alice", command)
            assert got == {"alice": ["Quelle issue pour #1 ? Envoyez /fermer 1 et un "
                                     "numéro :\n" + OUTCOME_LIST]}, command
        assert [t.state for t in await rows(services, Ticket)] == ["taken"]  # not closed
        got = await room.send("bob", "/close 1")  # the list in the mediator's language
        assert got["bob"][0].startswith("How did #1 end? Send /close 1 and a number:\n"
                                        "1. resolved\n2. referred to a partner\n")
        got = await room.send("alice", "/fermer 1 ORIENTÉ dossier envoyé à la CAF")
        assert got["alice"] == ["#1 est fermée. Merci !"]
        got = await room.send("alice", "/historique 1")
        assert "Résultat : orienté vers un partenaire" in got["alice"][0]
    (ticket,) = await rows(services, Ticket)
    assert ticket.outcome == "referred"
    notes = [n.body for n in await rows(services, TicketNote)]
    assert notes == ["@@taken", "dossier envoyé à la CAF", "@@closed:referred"]


async def test_english_staff_with_telegram_style_commands(services):
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await add(services, "terminal:ann", "Ann Lee", language="en")
        got = await room.send("john", "HELP", name="John", language="en")
        assert got == {"john": ["Thank you. A person from Relais will answer you here."]}
        got = await room.send("ann", "/queue@relais_bot")
        assert got["ann"][0].startswith("Waiting: 1\n#1 0 min - John (en, terminal): [asked")
        got = await room.send("ann", "/TAKE@relais_bot 1")
        assert got["john"] == ["Ann, of Relais, is answering you. Write your message here."]
        assert got["ann"][0].startswith("#1 is yours.\n")
        got = await room.send("ann", "/frobnicate")
        assert got["ann"][0].startswith("Commands:\n/queue: who is waiting\n")
        assert got == await room.send("ann", "/help")
        got = await room.send("ann", "/reply 1 Hello John")
        assert got == {"john": ["Ann: Hello John"], "ann": ["Sent to #1."]}
        got = await room.send("ann", "/reply 1")
        assert got == {"ann": ["Write the text after the number, like this: /reply 1 your text"]}
        got = await room.send("ann", "/take")
        assert got == {"ann": ["Which ticket? For example: /take 12"]}
        got = await room.send("ann", "/take 99")
        assert got == {"ann": ["There is no ticket #99."]}


# -- several tickets, permissions -----------------------------------------------------------------


async def test_plain_text_goes_to_the_one_ticket_held_else_needs_its_number(services):
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        await room.send("marie", "AIDE", name="Marie")
        await room.send("paul", "AIDE", name="Paul")
        await room.send("alice", "/prendre 1")
        assert await room.send("alice", "Bonjour") == {"marie": ["Alice : Bonjour"]}
        await room.send("alice", "/prendre 2")
        got = await room.send("alice", "Bonjour")
        assert got == {"alice": ["Vous suivez #1, #2. Commencez par le numéro, comme ceci : "
                                 "#1 votre texte"]}
        assert await room.send("alice", "#2 Bonjour Paul") == {"paul": ["Alice : Bonjour Paul"]}
        # each person's answer reaches the mediator with their ticket number
        assert await room.send("paul", "Salut") == {"alice": ["#2 Paul: Salut"]}
        assert await room.send("marie", "Coucou") == {"alice": ["#1 Marie: Coucou"]}


async def test_only_the_holder_or_a_coordinator_acts_and_release_reannounces(services):
    with time_machine.travel(MONDAY_10, tick=False) as clock:
        room = Room(services)
        await add(services, "terminal:alice", "Alice Martin")
        await add(services, "terminal:bob", "Bob Durand")
        await add(services, "terminal:chef", "Claire Chef", role="coordinator")
        await room.send("marie", "AIDE", name="Marie")
        await room.jobs()
        await room.send("alice", "/prendre 1")
        for command in ("/liberer 1", "/fermer 1", "/repondre 1 coucou",
                        "/transferer 1 terminal:bob"):
            got = await room.send("bob", command)
            assert got == {"bob": ["#1 est suivie par Alice Martin."]}, command
        got = await room.send("bob", "/note 1 je connais cette dame")  # notes: anyone
        assert got == {"bob": ["Note ajoutée à #1. La personne ne la voit pas."]}
        await add(services, "sms:+33622222222", "Dan Sms")
        got = await room.send("alice", "/transferer 1 06 22 22 22 22")  # a number: sms
        assert got["alice"] == ["#1 transmise à Dan Sms."]
        await room.send("chef", "/transferer 1 terminal:alice")
        got = await room.send("alice", "/transferer 1 terminal:inconnu")
        assert got == {"alice": ["terminal:inconnu ne fait pas partie de l'équipe."]}

        clock.shift(timedelta(minutes=6))
        got = await room.send("alice", "/liberer 1")
        assert got == {"alice": ["#1 est de retour dans la file."]}
        got = await room.jobs()  # the others hear it is back, not the one who let it go
        assert set(got) == {"bob", "chef", "+33622222222"}
        assert got["bob"][0].startswith("Nouveau dans la file :\n#1 6 min - Marie")
        assert await room.send("alice", "/liberer 1") == {"alice": ["#1 n'était pas prise."]}

        await room.send("bob", "/prendre 1")
        got = await room.send("chef", "/fermer 1 7 doublon")  # a coordinator may close any
        assert got["chef"] == ["#1 est fermée. Merci !"]
        assert await room.send("bob", "/fermer 1") == {"bob": ["#1 était déjà fermée."]}
        assert await room.send("bob", "/prendre 1") == {"bob": ["#1 est fermée."]}
    notes = [n.body for n in await rows(services, TicketNote)]
    assert notes == ["@@taken", "je connais cette dame", "@@transferred:Dan Sms",
                     "@@transferred:Alice Martin", "@@released", "@@taken", "doublon",
                     "@@closed:other"]


async def test_queue_on_sms_is_five_per_message_most_urgent_then_oldest(services):
    with time_machine.travel(MONDAY_10, tick=False) as clock:
        room = Room(services)
        await add(services, "sms:+33611111111", "Alice")
        for n in range(7):
            await room.send(f"p{n}", "AIDE", name=f"Personne{n}")
            clock.shift(timedelta(minutes=1))
        await room.send("p5", "il me frappe")  # the sixth becomes urgent
        got = await room.send("+33611111111", "/file", channel="sms")
        code = re.search(r"\d{6}", got["+33611111111"][0])  # by SMS: a one-time code first
        assert code is not None
        got = await room.send("+33611111111", code.group(0), channel="sms")
        lines = got["+33611111111"][1].splitlines()  # after "it is you": the waiting /file
        assert lines[0] == "En attente : 7 (page 1 sur 2)"
        assert [line.split()[0] for line in lines[1:6]] == ["#6", "#1", "#2", "#3", "#4"]
        assert lines[1].startswith("#6 URGENT 2 min - Personne5")
        assert lines[6:] == ["Page suivante : /file 2", "Pour répondre : /prendre N"]
        got = await room.send("+33611111111", "/file 2", channel="sms")
        lines = got["+33611111111"][0].splitlines()
        assert [line.split()[0] for line in lines[1:3]] == ["#5", "#7"]
        assert lines[3:] == ["Pour répondre : /prendre N"]


async def test_a_citizen_typing_staff_commands_is_a_citizen(services):
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        await room.send("marie", "AIDE")
        got = await room.send("intrus", "/take 1")
        assert set(got) == {"intrus"}  # nobody else hears of it, Marie least of all
        assert got["intrus"][0].startswith("Bonjour ! Ici Relais.")  # onboarding
        got = await room.send("intrus", "/queue")
        assert set(got) == {"intrus"}
        assert "#1" not in "\n".join(got["intrus"])
    (ticket,) = await rows(services, Ticket)
    assert (ticket.state, ticket.mediator_id) == ("open", None)


async def test_a_photo_reaches_the_mediator_as_a_signed_link(services):
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        await room.send("marie", "AIDE", name="Marie")
        await room.send("alice", "/prendre 1")
        got = await room.send("marie", media=(Media("image/jpeg", "file-123"),))
        (text,) = got["alice"]
        assert text.startswith("#1 Marie a envoyé une photo : http://127.0.0.1:8080/media/")
        assert "sig=" in text and "file-123" not in text
        got = await room.send("marie", "et voici le dos", media=(Media("audio/ogg", "v-1"),))
        assert got["alice"][0].splitlines()[0] == "#1 Marie: et voici le dos"
        assert "un message vocal" in got["alice"][0]
        got = await room.send("alice", "/note 1 merci")
        assert "marie" not in got


async def test_duty_and_callbacks_of_the_day(services):
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        alice = await add(services, "terminal:alice", "Alice")
        got = await room.send("alice", "/off")
        assert got == {"alice": ["Vous n'êtes plus de service : plus d'alertes. Envoyez /on "
                                 "pour revenir."]}
        await room.send("marie", "AIDE", name="Marie")
        await room.send("paul", "il me frappe", name="Paul")
        assert "alice" not in await room.jobs()  # off duty: neither batched nor urgent
        got = await room.send("alice", "/on")
        assert got["alice"] == ["Vous êtes de service : vous serez prévenu des nouvelles "
                                "demandes. En attente : 2. /file pour les voir."]
        assert await room.send("alice", "/rappels") == {
            "alice": ["Pas d'appel pour vous aujourd'hui."]}

        now = services.clock.now()
        async with services.sessions() as session, session.begin():
            marie = (await session.scalars(select(Contact).where(Contact.name == "Marie"))).one()
            paul = (await session.scalars(select(Contact).where(Contact.name == "Paul"))).one()
            session.add_all([
                Slot(start_at=now + timedelta(hours=4), minutes=30, mediator_id=alice,
                     status="booked", contact_id=marie.id, phone="+33612345678",
                     booked_at=now, created_at=now),
                Slot(start_at=now + timedelta(hours=5), minutes=30, mediator_id=None,
                     status="booked", contact_id=paul.id, phone="+33698765432",
                     booked_at=now, created_at=now),
                Slot(start_at=now + timedelta(days=1), minutes=30, mediator_id=alice,
                     status="booked", contact_id=paul.id, phone="+33698765432",
                     booked_at=now, created_at=now),
            ])
        got = await room.send("alice", "/rappels")
        assert got["alice"] == [
            "Vos appels du jour :\n"
            "1: 14h00 Marie +33 6 12 34 56 78\n"
            "2: 15h00 Paul +33 6 98 76 54 32 - pour tous\n"
            "Après l'appel : /fait ID joint, ou /fait ID absent"
        ]
        assert await room.send("alice", "/fait 1 joint") == {"alice": [
            "L'appel 1 n'a pas encore commencé : notez-le après l'appel."]}
    with time_machine.travel(MONDAY_10 + timedelta(hours=5, minutes=10), tick=False):
        assert await room.send("alice", "/fait 1 joint") == {
            "alice": ["Appel 1 : joint. Merci !"]}
        got = await room.send("alice", "/fait 2 absent")
        assert got["alice"] == ["Appel 2 : pas de réponse. On propose un autre horaire à la "
                                "personne."]
        assert got["paul"][0].startswith("Nous avons essayé de vous appeler")
        assert await room.send("alice", "/fait 1 joint") == {"alice": [
            "L'appel 1 ne peut pas être noté : ce n'est pas un appel réservé."]}
        assert await room.send("alice", "/fait") == {"alice": [
            "Par exemple : /fait 5 joint, ou /fait 5 absent"]}
    slots = {s.id: (s.status, s.outcome) for s in await rows(services, Slot)}
    assert slots == {1: ("done", "reached"), 2: ("done", "no-answer"), 3: ("booked", None)}
    (member,) = await rows(services, Staff)
    assert member.on_duty is True
