"""Help with a procedure: numbered themes or a few typed words, then the official page,
then "Did this help?" (no: a person is offered)."""

from __future__ import annotations

from bot.conversation.choices import number_in
from bot.conversation.context import Context, Flow, MenuItem, Next, State, choice
from bot.core.i18n import N_
from bot.core.types import Choice, Reply
from bot.domain import resources
from bot.storage.models import Resource

PAGE = 5  # resources per message: a theme's list stays within 2 SMS
MISSES_BEFORE_HUMAN = 2


def _yes_no(ctx: Context) -> tuple[Choice, ...]:
    _ = ctx._
    return (choice("yes", _("Yes"), "oui", "yes", "ok"), choice("no", _("No"), "non", "no"))


async def start(ctx: Context) -> Next:
    await resources.ensure_loaded(ctx.session, ctx.now)
    ctx.remember(misses=0)
    return "resources.themes"


async def themes(ctx: Context) -> Next:
    _ = ctx._
    choices = tuple(choice(theme, _(label), theme) for theme, label in resources.THEMES)
    ctx.ask(Reply(_("Which topic? Send the number, or write a few words, "
                    "for example CAF or passport."), choices))
    return None


async def theme_chosen(ctx: Context, choice_id: str) -> Next:
    ctx.remember(theme=choice_id, page=0)
    ctx.event("resource.theme", theme=choice_id)
    return "resources.theme"


async def theme(ctx: Context) -> Next:
    _ = ctx._
    name = ctx.recall("theme")
    items = resources.for_theme(
        await resources.all_resources(ctx.session), name, ctx.contact.level
    )
    if not items:
        return "resources.themes"
    page = int(ctx.recall("page", 0))
    if page * PAGE >= len(items):
        page = 0
    shown = items[page * PAGE:(page + 1) * PAGE]
    options = [
        choice("r:" + item.id, resources.text_for(item, ctx.contact.language)["title"])
        for item in shown
    ]
    if (page + 1) * PAGE < len(items):
        options.append(choice("more", _("More"), "plus", "more", "suite"))
    options.append(choice("topics", _("Other topics"), "sujets", "topics", "retour", "back"))
    text = _("{theme}: send the number of your choice.",
             theme=_(resources.theme_label(name)))
    ctx.ask(Reply(text, tuple(options)))
    return None


async def item_chosen(ctx: Context, choice_id: str) -> Next:
    if choice_id == "more":
        ctx.remember(page=int(ctx.recall("page", 0)) + 1)
        return "resources.theme"
    if choice_id == "topics":
        return "resources.themes"
    if choice_id.startswith("r:"):
        ctx.remember(resource=choice_id[2:])
        return "resources.show"
    return None


async def searched(ctx: Context, text: str) -> Next:
    """Words typed instead of a number: the best matches (at most 3)."""
    _ = ctx._
    if number_in(text) is not None:  # a number that is not on the list: not understood
        return None
    hits = await resources.find(ctx.session, text, ctx.contact.level)
    ctx.event("resource.search", found=len(hits))
    if not hits:
        misses = int(ctx.recall("misses", 0)) + 1
        ctx.remember(misses=misses)
        if misses >= MISSES_BEFORE_HUMAN:
            ctx.remember(misses=0)
            ctx.say(_("Sorry, I found nothing for these words."))
            return "resources.human"
        ctx.say(_("Sorry, I found nothing for these words. Try other words, or a topic."))
        return "resources.themes"
    ctx.remember(misses=0)
    if len(hits) == 1:
        ctx.remember(resource=hits[0].resource.id)
        return "resources.show"
    ctx.remember(hits=[hit.resource.id for hit in hits])
    return "resources.results"


async def results(ctx: Context) -> Next:
    _ = ctx._
    found = [await ctx.session.get(Resource, rid) for rid in ctx.recall("hits", [])]
    options = tuple(
        choice("r:" + item.id, resources.text_for(item, ctx.contact.language)["title"])
        for item in found if item is not None
    )
    if not options:
        return "resources.themes"
    ctx.ask(Reply(_("Here is what I found. Send the number."), options))
    return None


async def show(ctx: Context) -> Next:
    _ = ctx._
    item = await ctx.session.get(Resource, ctx.recall("resource") or "")
    if item is None:  # removed meanwhile
        return "resources.themes"
    ctx.say(resources.resource_message(item, ctx.contact.language))
    ctx.event("resource.sent", id=item.id)
    ctx.ask(Reply(_("Did this help?"), _yes_no(ctx)))
    return None


async def helpful(ctx: Context, choice_id: str) -> Next:
    useful = choice_id == "yes"
    ctx.event("resource.helpful", id=ctx.recall("resource"), helpful=useful)
    if useful:
        ctx.say(ctx._("Glad it helped."))
        return "menu.main"
    return "resources.human"


async def offer_human(ctx: Context) -> Next:
    _ = ctx._
    ctx.ask(Reply(_("Do you want a person to help you?"), _yes_no(ctx)))
    return None


async def human_answered(ctx: Context, choice_id: str) -> Next:
    if choice_id == "yes":
        from bot.flows.escalation import request_human

        return await request_human(ctx, source="resource")
    return "menu.main"


FLOW = (
    Flow(
        "resources",
        {
            "themes": State(enter=themes, on_choice=theme_chosen, on_text=searched),
            "theme": State(enter=theme, on_choice=item_chosen, on_text=searched),
            "results": State(enter=results, on_choice=item_chosen, on_text=searched),
            "show": State(enter=show, on_choice=helpful),
            "human": State(enter=offer_human, on_choice=human_answered),
        },
    )
)

MENU_ITEM = MenuItem("resources", N_("Help with a procedure"),
                  ("demarche", "demarches", "procedure"), start)
