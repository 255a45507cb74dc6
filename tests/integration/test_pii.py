"""Private data masked before storage and logs: cases of what must be masked and of the
look-alikes that must stay, then the whole path through the engine (stored masked, the
person warned once, nothing original in the logs), in French and English. The measured
figures, on a corpus written apart from the detectors, are in ``test_masking_corpus.py``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import select
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.fr import nir as stdnum_nir

from bot.core import pii
from bot.core.masking import mask
from bot.storage.models import Event, Message
from tests.helpers.dialog import Dialog, choose


def nir(body: str) -> str:
    return body + stdnum_nir.calc_check_digits(body)


def iban(country: str, bban: str) -> str:
    return country + stdnum_iban.calc_check_digits(country + "00" + bban) + bban


def card(body: str) -> str:
    return body + luhn.calc_check_digit(body)


NIR = nir("2690549588157")  # 269054958815780
NIR_CORSICA_A = nir("185052A006084")
NIR_CORSICA_B = nir("185052B006084")
NIR_REUNION = nir("1850597412345")  # born in La Réunion (974), commune 12
IBAN_FR = iban("FR", "30006000011234567890189")
IBAN_DE = iban("DE", "370400440532013000")
VISA = card("497010123456789")
MASTERCARD = card("512345678901234")
AMEX = card("37828224631000")


def spaced(number: str, sizes: list[int], sep: str = " ") -> str:
    parts, start = [], 0
    for size in sizes:
        parts.append(number[start:start + size])
        start += size
    return sep.join(parts)


MASKED = [
    # social-security numbers, with their key, written every way
    (f"mon numéro de sécu est {spaced(NIR, [1, 2, 2, 2, 3, 3, 2])} merci",
     "mon numéro de sécu est [NIR] merci", ("nir",)),
    (f"sécu {NIR}", "sécu [NIR]", ("nir",)),
    (spaced(NIR, [1, 2, 2, 2, 3, 3, 2], "."), "[NIR]", ("nir",)),
    (f"né en Corse : {spaced(NIR_CORSICA_A, [1, 2, 2, 2, 3, 3, 2])}", "né en Corse : [NIR]",
     ("nir",)),
    (NIR_CORSICA_B.lower(), "[NIR]", ("nir",)),
    (f"numéro de sécu {spaced(NIR, [1, 2, 2, 2, 3, 3, 2], '  ')} merci",
     "numéro de sécu [NIR] merci", ("nir",)),
    (f"sécu {spaced(NIR, [1, 2, 2, 2, 3, 3], '-')} clé {NIR[-2:]}", "sécu [NIR]", ("nir",)),
    (f"NIR {spaced(NIR, [1, 2, 2, 2, 3, 3])} cle: {NIR[-2:]}, merci", "NIR [NIR], merci",
     ("nir",)),
    (f"carte vitale {spaced(NIR_REUNION, [1, 2, 2, 3, 2, 3, 2])}", "carte vitale [NIR]",
     ("nir",)),
    # IBANs (mod 97), grouped or not, any case
    (f"IBAN {spaced(IBAN_FR, [4, 4, 4, 4, 4, 4, 3])} pour la CAF",
     "IBAN [IBAN] pour la CAF", ("iban",)),
    (IBAN_FR.lower(), "[IBAN]", ("iban",)),
    (f"mon rib: {IBAN_DE}.", "mon rib: [IBAN].", ("iban",)),
    # card numbers (Luhn), the usual groupings
    (f"ma carte {spaced(VISA, [4, 4, 4, 4])} exp 12/25", "ma carte [CARTE] exp 12/25", ("card",)),
    (f"CB {VISA}", "CB [CARTE]", ("card",)),
    (spaced(MASTERCARD, [4, 4, 4, 4], "-"), "[CARTE]", ("card",)),
    (f"amex {spaced(AMEX, [4, 6, 5])}", "amex [CARTE]", ("card",)),
    (f"carte {spaced(VISA, [1, 3, 3, 3, 3, 3])}", "carte [CARTE]", ("card",)),
    # after any word, when it is Luhn-valid and written like a card
    (f"facture {spaced(VISA, [4, 4, 4, 4])}", "facture [CARTE]", ("card",)),
    (f"commande payée avec {MASTERCARD}", "commande payée avec [CARTE]", ("card",)),
    (f"dossier 2024-118 {spaced(VISA, [4, 4, 4, 4], '-')}", "dossier 2024-118 [CARTE]",
     ("card",)),
    # passwords and codes
    ("mdp: Soleil2024!", "mdp: [MOT DE PASSE]", ("password",)),
    ("mon mot de passe est soleil", "mon mot de passe est [MOT DE PASSE]", ("password",)),
    ("Mot de passe : papillon", "Mot de passe : [MOT DE PASSE]", ("password",)),
    ("password hunter2", "password [MOT DE PASSE]", ("password",)),
    ("my password is bluebird", "my password is [MOT DE PASSE]", ("password",)),
    ("mon mdp c est Soleil75", "mon mdp c est [MOT DE PASSE]", ("password",)),
    ("mot de passe de mon compte ameli c'est Marie1985!",
     "mot de passe de mon compte ameli c'est [MOT DE PASSE]", ("password",)),
    ("identifiant 1234567 mot de passe Loulou2010",
     "identifiant 1234567 mot de passe [MOT DE PASSE]", ("password",)),
    ("pass:Azerty123", "pass:[MOT DE PASSE]", ("password",)),
    ("c'est Chouchou06 le mot de passe", "c'est [MOT DE PASSE] le mot de passe",
     ("password",)),
    ("Je vous donne mon mot de passe pour la démarche : bichette44",
     "Je vous donne mon mot de passe pour la démarche : [MOT DE PASSE]", ("password",)),
    ("mot de passe :\nPapillon2024", "mot de passe :\n[MOT DE PASSE]", ("password",)),
    # a password described rather than given: the rest of the clause
    ("mon mot de passe c'est le prénom de ma fille, merci",
     "mon mot de passe c'est [MOT DE PASSE], merci", ("password",)),
    # one-time codes, PINs and card security codes are codes
    ("le code est 4821", "le code est [CODE]", ("code",)),
    ("code: 4821", "code: [CODE]", ("code",)),
    ("code pin 0000 svp", "code pin [CODE] svp", ("code",)),
    ("PIN 1234", "PIN [CODE]", ("code",)),
    ("cvv 123", "cvv [CODE]", ("code",)),
    ("j'ai reçu le code de confirmation 583920", "j'ai reçu le code de confirmation [CODE]",
     ("code",)),
    ("le code reçu par sms est 482913", "le code reçu par sms est [CODE]", ("code",)),
    ("code de ma carte bleue 7391", "code de ma carte bleue [CODE]", ("code",)),
    ("code secret 2580", "code secret [CODE]", ("code",)),
    ("code reçu par sms 93200", "code reçu par sms [CODE]", ("code",)),  # not a bare "code"
    ("482 913 est votre code de vérification", "[CODE] est votre code de vérification",
     ("code",)),
    # several at once
    (f"carte {VISA} code 1234 sécu {NIR}", "carte [CARTE] code [CODE] sécu [NIR]",
     ("nir", "card", "code")),
    (f"iban {IBAN_DE} mdp: Soleil2024 pin 0000", "iban [IBAN] mdp: [MOT DE PASSE] pin [CODE]",
     ("iban", "password", "code")),
]

KEPT = [
    # invalid checks: not what they look like
    NIR[:-2] + f"{(int(NIR[-2:]) + 1) % 97:02d}",
    IBAN_FR[:-1] + "8",
    VISA[:-1] + str((int(VISA[-1]) + 1) % 10),
    # phone numbers
    "appelez-moi au 06 12 34 56 78",
    "+33 6 12 34 56 78",
    "0033612345678",
    "06.12.34.56.78",
    "+262 692 12 34 56",
    "262692123456",
    "06 12 34 56 78 01 23 45 67 89",
    # dates and times
    "rendez-vous le 12/05/2023 à 14h30",
    "le 2023-05-12",
    "le 12.05.2023",
    "horodatage 20230512103002",  # a date-time that passes the Luhn check
    # SIRET numbers pass Luhn: kept
    "SIRET 732 829 320 00074",
    "73282932000074",
    # amounts, postcodes, other numbers people must be able to give
    "1 234 567,89 €",
    f"montant {spaced(VISA, [4, 4, 4, 4])} €",
    "code postal 59000",
    "Code postal : 97400",
    "CP 75011",
    "code 93200",  # the answer to the postcode question
    "mon code c'est 59000",
    "SIRET 12345678901234 facture 2024-00123",
    "colis 6A12345678901 commande 250312345678",
    "numéro de suivi 8R01234567890",
    "identifiant fiscal : 12 34 567 890 123",
    "numéro fiscal 3000000000007",
    "mon numéro allocataire CAF 1234567",
    "suivi du colis 6A12345678901",
    # words after "mot de passe" or "code" that are not secrets
    "j'ai oublié mon mot de passe",
    "mot de passe oublié",
    "mon mot de passe est bloqué",
    "le code de la route",
    "je n'ai pas reçu le code",
    "pass navigo",
    "le mot de passe est bloqué après 3 essais",
    "mot de passe trop faible, il veut 12 caractères",
    "le code à 6 chiffres n'arrive pas",
    "code erreur 500",
    "code INSEE 93066",
    "le code expire dans 10 minutes",
    "envoyez le code au 06 12 34 56 78",
    "mon mot de passe est écrit dans mon carnet",
    # already masked text stays as it is
    "mdp: [MOT DE PASSE]",
    "[NIR] et [CARTE]",
]


@pytest.mark.parametrize(("text", "expected", "kinds"), MASKED)
def test_private_data_is_masked(text: str, expected: str, kinds: tuple[str, ...]) -> None:
    result = mask(text)
    assert (result.text, result.kinds) == (expected, kinds)


@pytest.mark.parametrize("text", KEPT)
def test_look_alikes_stay(text: str) -> None:
    assert mask(text) == pii.Masked(text, ())


@pytest.mark.parametrize(("text", "_expected", "_kinds"), MASKED)
def test_masking_twice_changes_nothing(text: str, _expected: str, _kinds: object) -> None:
    once = mask(text).text
    assert mask(once) == pii.Masked(once, ())


def test_card_check_digits_are_what_makes_a_card() -> None:
    assert pii.is_card_number(VISA)
    assert not pii.is_card_number("73282932000074")  # SIRET, Luhn-valid
    assert not pii.is_card_number("0" + VISA[1:])
    assert not pii.is_card_number(VISA[:11])


# -- through the engine ------------------------------------------------------------------------

WARNING_EN = "We hid the private code or number you sent: keep it to yourself."
WARNING_FR = "Nous avons caché le code ou le numéro privé envoyé : gardez-le pour vous."


async def stored_inbound(services) -> list[Message]:
    async with services.sessions() as session:
        return list(await session.scalars(
            select(Message).where(Message.direction == "in").order_by(Message.id)
        ))


async def onboard(dialog: Dialog, greeting: str, language: str) -> None:
    offered = await dialog.send(greeting)
    level = await choose(dialog, offered, language)
    postcode = await choose(dialog, level, "skip")
    news = await choose(dialog, postcode, "skip")
    await choose(dialog, news, "skip")


async def test_french_person_is_warned_once_and_only_the_masked_text_is_kept(
    services, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    dialog = Dialog(services)
    await onboard(dialog, "bonjour", "fr")
    got = Dialog.texts(await dialog.send(f"voici ma carte {VISA} et mon mdp: Soleil2024!"))
    assert got[0].split("\n\n")[0] == WARNING_FR
    again = Dialog.texts(await dialog.send(f"et ma sécu {NIR}"))
    assert not any(WARNING_FR in text for text in again)  # once per conversation
    messages = await stored_inbound(services)
    assert [m.body for m in messages[-2:]] == [
        "voici ma carte [CARTE] et mon mdp: [MOT DE PASSE]", "et ma sécu [NIR]",
    ]
    assert [m.masked for m in messages[-2:]] == [["card", "password"], ["nir"]]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (VISA, "Soleil2024", NIR):
        assert secret not in logged
    async with services.sessions() as session:
        kinds = [e.value for e in await session.scalars(
            select(Event).where(Event.kind == "private_data.masked").order_by(Event.id)
        )]
    assert kinds == [{"kinds": ["card", "password"]}, {"kinds": ["nir"]}]


async def test_english_person_is_warned_again_the_next_day(services) -> None:
    start = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as traveller:
        dialog = Dialog(services, who="bob")
        await onboard(dialog, "hello", "en")
        got = Dialog.texts(await dialog.send(f"my IBAN is {IBAN_FR}"))
        assert got[0].startswith(WARNING_EN)
        traveller.shift(timedelta(hours=2))
        assert not any(WARNING_EN in t for t in Dialog.texts(await dialog.send("code 1234")))
        traveller.shift(timedelta(days=1))
        assert Dialog.texts(await dialog.send("pin 9876"))[0].startswith(WARNING_EN)
    bodies = [m.body for m in await stored_inbound(services)][-3:]
    assert bodies == [f"my IBAN is {pii.TOKENS['iban']}", "code [CODE]", "pin [CODE]"]


async def test_a_message_without_private_data_gets_no_warning(services) -> None:
    dialog = Dialog(services)
    await onboard(dialog, "bonjour", "fr")
    got = Dialog.texts(await dialog.send("mon numéro est le 06 12 34 56 78, code postal 59000"))
    assert not any(WARNING_FR in text for text in got)
    assert (await stored_inbound(services))[-1].masked is None
