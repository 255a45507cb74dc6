"""Onboarding: welcome, privacy notice, language (when unknown), then the main menu."""

from __future__ import annotations

from bot.flows.base import Context, Flow, Next, State, register
from bot.i18n import N_, Translator, language_name, languages
from bot.types import Choice, Reply

CHOOSE_LANGUAGE = N_("Choose your language:")


async def welcome(ctx: Context) -> Next:
    _ = ctx._
    ctx.say(_("Hello! This is {org}. We help you with online procedures.", org=ctx.org))
    ctx.say(_("Your messages are only used to help you. Send OUBLIER to erase them."))
    ctx.event("onboarding.started")
    if ctx.contact.language is None:
        return "onboarding.language"
    return "menu.main"


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


FLOW = register(
    Flow(
        "onboarding",
        {
            "welcome": State(enter=welcome),
            "language": State(enter=ask_language, on_choice=language_chosen),
        },
    )
)
