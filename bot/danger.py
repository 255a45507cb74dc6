"""Danger words: violence at home, threats, suicide, sleeping outside, no food, a child in
danger. A citizen's message that matches makes their ticket urgent, tells every on-duty
staff member at once, and gives the person the emergency numbers (``bot.flows.escalation``).

Patterns are regular expressions over folded text (``bot.flows.choices.fold``: lower case,
no accents; here also apostrophes and punctuation turned into spaces, and Arabic letter
variants unified), matched on word boundaries. Every language's patterns are tried on every
message: people often write in a language other than the one they chose. Each pattern is
written to avoid everyday phrases ("frapper à la porte", "he beat me at chess", "je me
bats pour mon dossier"); ``tests/test_danger.py`` holds a table of true and false cases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.flows.base import Context, add_step_hook
from bot.flows.choices import fold

VIOLENCE, THREAT, SUICIDE, STREET, HUNGER, CHILD, DANGER = (
    "violence", "threat", "suicide", "street", "hunger", "child", "danger",
)

# "je me cogne", "ce qui me frappe" are not "il me cogne", "il me frappe".
_NOT_SELF = r"(?<!\bje )(?<!\bj )(?<!\bqui )(?<!\bca )(?<!\bcela )(?<!\bce )"
_FR_HURT = (r"frapp\w*|cogn\w*|tabass\w*|battu\w*|bat|battait|battaient|battent|"
            r"brutalis\w*|etrangl\w*|viole|violee|gifl\w*")
_FR_KILL = r"(?:tuer|frapper|battre|bruler|egorger|defigurer|faire du mal|enlever)"
_PEOPLE_FR = (r"il|elle|ils|elles|mon mari|mon conjoint|mon compagnon|mon copain|mon ex|"
              r"ma femme|ma compagne|mon pere|ma mere|mon fils|mon frere|mon voisin")
_PEOPLE_EN = (r"he|she|they|my husband|my wife|my partner|my boyfriend|my girlfriend|my ex|"
              r"my father|my dad|my mother|my mum|my mom|my son|my brother")
_EN_HURT = (r"hits|hit|beats|beat|punches|punched|kicks|kicked|chokes|choked|strangled|"
            r"slaps|slapped|abuses|abused|hurts|hurt|rapes|raped")
_NOT_GAME = r"(?! at\b| in\b| to\b| up\b| by\b| on\b)"  # "he beat me at chess"
_AR = r"[وف]?"  # Arabic "and"/"so" glued to the next word

PATTERNS: dict[str, dict[str, tuple[str, ...]]] = {
    "fr": {
        VIOLENCE: (
            _NOT_SELF + rf"\b(?:me|m a|m ont|m avait|nous ont)\s(?:{_FR_HURT})\b",
            r"\bviolences? (?:conjugales?|domestiques?|familiales?|a la maison|chez moi)\b",
            r"\bvictimes? de violences?\b",
            rf"\b(?:{_PEOPLE_FR}) (?:est|devient|etait|sont) (?:tres |trop )?violent\w*",
            r"\bpeur pour ma vie\b",
            r"\bj ai peur de (?:lui|mon mari|mon conjoint|mon compagnon|mon ex)\b",
        ),
        THREAT: (
            rf"\bmenac\w* de (?:me |nous )?{_FR_KILL}\b",
            rf"\bme menac\w*(?:$| de mort| avec\b| tout le temps| sans arret| de me {_FR_KILL})",
            r"\bmenaces? de mort\b",
            r"\b(?:va|vont|veut|veulent|voulait|allait|essaye de|a essaye de) me tuer\b",
        ),
        SUICIDE: (
            r"\bsuicid\w*",
            r"\b(?:envie de|je vais|je veux|vais|veux|voudrais) me tuer\b",
            r"\b(?:envie de|je veux|je voudrais) mourir\b(?! de rire)",
            r"\bplus envie de vivre\b",
            r"\bmettre fin a (?:mes jours|ma vie)\b",
            r"\ben finir avec (?:la vie|tout)\b",
            r"\bme foutre en l air\b",
        ),
        STREET: (
            r"\b(?:je|j|on|nous|il|elle|ils) (?:dors|dort|dormons|dorment|dormirai|dormirons|"
            r"vais dormir|va dormir|allons dormir|ai dormi|avons dormi) (?:dehors|dans la rue|"
            r"a la rue|dans ma voiture|dans la voiture|dans un parc|a la gare)\b",
            r"\bdormir dehors\b",
            r"\b(?:suis|sommes|est|sont|etre|retrouve|retrouvee|retrouves|mis|mise|mises|"
            r"jete|jetee|jetes) a la rue\b",
            r"\bsans (?:abri|domicile|logement)\b",
            r"\bsdf\b",
            r"\b(?:nulle part|pas d endroit|aucun endroit) ou dormir\b",
            r"\bpas d endroit pour dormir\b",
            r"\b(?:pas|plus) de toit\b",
        ),
        HUNGER: (
            r"\b(?:rien|plus rien|pas de quoi|plus de quoi|rien du tout) (?:a )?manger\b",
            r"\b(?:pas|rien|plus) mange depuis\b",
            r"\b(?:j ai|on a|nous avons|ils ont|elles ont|mes enfants ont|il a|elle a) "
            r"(?:tres |trop )?faim\b",
            r"\bmourir de faim\b",
            r"\b(?:pas|plus) de nourriture\b",
        ),
        CHILD: (
            r"\benfants? (?:est |sont )?en danger\b",
            r"\bmaltrait\w*",
            r"\battouchements?\b",
            r"\binceste\b",
            r"\babus sexuels?\b",
            r"\bagression sexuelle\b",
            r"\bviols?\b",
            r"\b(?:m a|l a|les a|a ete|ai ete|j ai ete|ont ete) viole\w*",
        ),
        DANGER: (
            r"\b(?:je suis|nous sommes|on est|ma vie est|il est|elle est) en danger\b",
        ),
    },
    "en": {
        VIOLENCE: (
            rf"\b(?:{_PEOPLE_EN}) (?:{_EN_HURT}) me\b{_NOT_GAME}",
            rf"\b(?:hitting|beating|punching|kicking|choking|strangling|hurting|abusing) me\b"
            rf"{_NOT_GAME}",
            r"\bdomestic (?:violence|abuse)\b",
            r"\babusive (?:partner|husband|wife|boyfriend|girlfriend|relationship|father|"
            r"mother|parent)\b",
            r"\b(?:afraid|scared|fear) for my life\b",
        ),
        THREAT: (
            r"\bthreaten\w* to (?:kill|hurt|beat|burn)\b",
            r"\bdeath threats?\b",
            r"\b(?:wants to|tried to|trying to|threatened to) kill (?:me|us)\b",
            r"\b(?:he|she|they) (?:is going to|s going to|is gonna|s gonna|are going to|"
            r"re going to|will) kill (?:me|us)\b",
        ),
        SUICIDE: (
            r"\bsuicid\w*",
            r"\bkill myself\b",
            r"\bend my (?:own )?life\b",
            r"\bend it all\b",
            r"\b(?:i want|i wanna|i m going|i am going|i d like) to die\b",
            r"\b(?:don t|do not|no longer) want to live\b",
            r"\bno reason to live\b",
        ),
        STREET: (
            r"\bsleep(?:ing|s)? (?:rough|outside|on the streets?|in the streets?|in my car|"
            r"in the car|in a park)\b",
            r"\bslept (?:rough|outside|on the streets?|in my car)\b",
            r"\bhomeless\b",
            r"\bnowhere to (?:sleep|stay|live)\b",
            r"\b(?:i m|i am|we are|we re) on the streets?\b",
        ),
        HUNGER: (
            r"\bnothing to eat\b",
            r"\b(?:have|has|got) no food\b",
            r"\bno food (?:at home|in the house|for (?:me|us|my|the kids|the children))\b",
            r"\b(?:haven t|have not|hasn t|has not|didn t|did not) eaten\b",
            r"\bstarving\b",
            r"\b(?:i m|i am|we are|we re|kids are|children are|they are) (?:so |very )?"
            r"hungry\b(?! for (?!(?:\d+|a|two|three|several|many) (?:day|days|week|weeks)\b))",
        ),
        CHILD: (
            r"\bchild(?:ren)? (?:is |are )?in danger\b",
            r"\b(?:child|kid|son|daughter|children|kids) (?:is |are )?(?:being )?abused\b",
            r"\bsexual(?:ly)? (?:abuse|abused|assault|assaulted)\b",
            r"\braped?\b",
        ),
        DANGER: (
            r"\b(?:i m|i am|we are|we re|my life is|she is|he is) in danger\b",
        ),
    },
    # Arabic is matched (people write in it) even while replies use the French catalog.
    "ar": {
        VIOLENCE: (
            rf"(?<!\w){_AR}(?:يضربني|ضربني|تضربني|يضربونني|يضربنا|يعنفني|يعذبني)(?!\w)",
            r"(?<!\w)عنف (?:اسري|زوجي|منزلي)(?!\w)",
        ),
        THREAT: (
            rf"(?<!\w){_AR}(?:يهددني|تهددني|هددني|سيقتلني|بيقتلني|يقتلني)(?!\w)",
            r"(?<!\w)(?:يريد|يريدون|يبغي) (?:قتلي|ان يقتلني)(?!\w)",
        ),
        SUICIDE: (
            rf"(?<!\w){_AR}(?:الانتحار|انتحار|انتحر|سانتحر)(?!\w)",
            r"(?<!\w)(?:اقتل نفسي|اريد ان اموت|بدي اموت|ابغي اموت)(?!\w)",
        ),
        STREET: (
            r"(?<!\w)(?:انام|ننام|نايم|نايمه|نمت) في الشارع(?!\w)",
            r"(?<!\w)(?:بلا|بدون) (?:ماوي|مسكن)(?!\w)",
            rf"(?<!\w){_AR}(?:مشرد|مشرده|مشردين|مشردون)(?!\w)",
        ),
        HUNGER: (
            r"(?<!\w)(?:ليس لدي|ليس لدينا|لا يوجد|ما عندي|ما عندنا|ماعندي) (?:طعام|اكل)(?!\w)",
            rf"(?<!\w){_AR}(?:جايع|جايعه|جوعان|جوعانه|جوعانين)(?!\w)",
        ),
        CHILD: (
            r"(?<!\w)(?:طفلي|اطفالي|ابني|بنتي|ابنتي) في خطر(?!\w)",
        ),
        DANGER: (
            r"(?<!\w)(?:انا|نحن|حياتي) في خطر(?!\w)",
        ),
    },
}

_COMPILED: list[tuple[str, str, re.Pattern[str]]] = [
    (language, category, re.compile(pattern))
    for language, categories in PATTERNS.items()
    for category, patterns in categories.items()
    for pattern in patterns
]

_APOSTROPHES = str.maketrans({c: " " for c in "'’‘`´ʼ"})
_ARABIC = str.maketrans({"ة": "ه", "ى": "ي", "ـ": None})
_NOT_WORD = re.compile(r"[^\w\s]+")


@dataclass(frozen=True)
class Found:
    category: str
    language: str
    words: str  # what matched (folded), for tests and logs never shown to the person


def normalise(text: str) -> str:
    """Folded text with apostrophes and punctuation as spaces (``"Il m'a frappée !"`` →
    ``"il m a frappee"``)."""
    folded = fold(text.translate(_APOSTROPHES)).translate(_ARABIC)
    return " ".join(_NOT_WORD.sub(" ", folded).replace("_", " ").split())


def match(text: str) -> Found | None:
    """The first danger the text speaks of, or None."""
    if not text or not text.strip():
        return None
    plain = normalise(text)
    for language, category, pattern in _COMPILED:
        found = pattern.search(plain)
        if found:
            return Found(category, language, found.group(0))
    return None


async def hook(ctx: Context) -> bool:
    """Step hook for citizens (staff commands are a hook of their own, run first)."""
    inbound = ctx.inbound
    if inbound is None or not inbound.text or inbound.choice_id:
        return False
    found = match(inbound.text)
    if found is None:
        return False
    from bot.engine import clean_text
    from bot.flows.escalation import danger

    if ctx.contact.opted_out_at is not None:
        # STOP holds (the provider refuses anyway), but staff must still know.
        ticket, _created = await ctx.open_ticket("danger", "urgent", found.category)
        from bot import notify

        await notify.ticket_opened(ctx, ticket)
        return True
    text = ctx.message.body if ctx.message is not None and ctx.message.body else inbound.text
    await danger(ctx, found, clean_text(text))
    return True


add_step_hook(hook)
