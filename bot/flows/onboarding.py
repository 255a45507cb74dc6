"""Onboarding: welcome, privacy notice, language (when unknown), ease with digital tools,
postcode, the centre's news, then the main menu.

Every question can be skipped ("Passer"/"Skip", a button or the word); AIDE works at every
step, as everywhere. The language question is also the one LANGUE asks later
(``onboarding.language``, back to the menu); the first one goes on with onboarding.
"""

from __future__ import annotations

from bot.conversation.choices import fold
from bot.conversation.context import Context, Flow, Next, State, choice
from bot.core.addresses import Address as AddressValue
from bot.core.addresses import timezone_for
from bot.core.i18n import N_, Translator, language_name, languages
from bot.core.postcodes import parse_postcode
from bot.core.types import Choice, Reply

CHOOSE_LANGUAGE = N_("Choose your language:")
SKIP_WORDS = ("passer", "skip")
LEVELS = {"none": 1, "little": 2, "ease": 3}


async def welcome(ctx: Context) -> Next:
    _ = ctx._
    ctx.say(_("Hello! This is {org}. We help you with online procedures.", org=ctx.org))
    ctx.say(_("Your messages are only used to help you. Send OUBLIER to erase them."))
    ctx.event("onboarding.started")
    if ctx.contact.language is None:
        return "onboarding.first_language"
    return "onboarding.level"


async def ask_language(ctx: Context) -> Next:
    codes = languages()
    text = " / ".join(Translator(code)(CHOOSE_LANGUAGE) for code in codes)
    choices = tuple(Choice(code, language_name(code), (code,)) for code in codes)
    ctx.ask(Reply(text, choices))
    return None


async def language_chosen(ctx: Context, choice_id: str) -> Next:
    ctx.contact.language = choice_id
    ctx.event("language.chosen", language=choice_id)
    return "menu.main"


async def first_language_chosen(ctx: Context, choice_id: str) -> Next:
    await language_chosen(ctx, choice_id)
    return "onboarding.level"


async def first_language_text(ctx: Context, text: str) -> Next:
    return "onboarding.level" if _is_skip(text) else None  # French stays the default


async def ask_level(ctx: Context) -> Next:
    _ = ctx._
    ctx.ask(Reply(
        _("Are you at ease with the internet and phones?"),
        (choice("none", _("Not at all")), choice("little", _("A little")),
         choice("ease", _("Yes, at ease")), _skip(ctx)),
    ))
    return None


async def level_chosen(ctx: Context, choice_id: str) -> Next:
    if choice_id in LEVELS:
        ctx.contact.level = LEVELS[choice_id]
        ctx.event("onboarding.level", level=LEVELS[choice_id])
    return "onboarding.postcode"


async def ask_postcode(ctx: Context) -> Next:
    _ = ctx._
    ctx.ask(Reply(_("What is your postcode? It helps us find help near you."), (_skip(ctx),)))
    return None


async def ask_postcode_again(ctx: Context) -> Next:
    _ = ctx._
    ctx.ask(Reply(_("Sorry, a postcode has 5 digits, like 75011. Can you send it again?"),
                  (_skip(ctx),)))
    return None


async def skipped(ctx: Context, choice_id: str) -> Next:
    return "onboarding.news"


async def postcode_text(ctx: Context, text: str) -> Next:
    if _is_skip(text):
        return "onboarding.news"
    if _set_postcode(ctx, text):
        return "onboarding.news"
    return "onboarding.postcode_again"


async def postcode_again_text(ctx: Context, text: str) -> Next:
    if not _is_skip(text) and not _set_postcode(ctx, text):
        ctx.say(ctx._("No problem, we skip this question."))
    return "onboarding.news"


def _set_postcode(ctx: Context, text: str) -> bool:
    code = parse_postcode(text)  # five digits naming a département, overseas included
    if code is None:
        return False
    ctx.contact.postcode = code
    where = AddressValue(ctx.address.channel, ctx.address.external_id) if ctx.address else None
    ctx.contact.timezone = timezone_for(code, where, ctx.settings.timezone)
    ctx.event("onboarding.postcode")
    return True


async def ask_news(ctx: Context) -> Next:
    _ = ctx._
    ctx.ask(Reply(
        _("Do you want news from {org}? (workshops, distributions)", org=ctx.org),
        (choice("yes", _("Yes"), "oui", "yes", "ok"), choice("no", _("No"), "non", "no"),
         _skip(ctx)),
    ))
    return None


async def news_chosen(ctx: Context, choice_id: str) -> Next:
    if choice_id in ("yes", "no"):
        await ctx.set_consent("news", choice_id == "yes")
    if choice_id == "yes":
        ctx.say(ctx._("Thank you. You will get our news."))
    ctx.event("onboarding.done")
    return "menu.main"


def _skip(ctx: Context) -> Choice:
    return choice("skip", ctx._("Skip"), *SKIP_WORDS)


def _is_skip(text: str) -> bool:
    return fold(text) in SKIP_WORDS


FLOW = (
    Flow(
        "onboarding",
        {
            "welcome": State(enter=welcome),
            "language": State(enter=ask_language, on_choice=language_chosen),
            "first_language": State(enter=ask_language, on_choice=first_language_chosen,
                                    on_text=first_language_text),
            "level": State(enter=ask_level, on_choice=level_chosen),
            "postcode": State(enter=ask_postcode, on_choice=skipped, on_text=postcode_text),
            "postcode_again": State(enter=ask_postcode_again, on_choice=skipped,
                                    on_text=postcode_again_text),
            "news": State(enter=ask_news, on_choice=news_chosen),
        },
    )
)
