"""Find a place near me: the person's postcode (remembered), then the three nearest help
places with address, phone and opening hours in plain words."""

from __future__ import annotations

from bot.conversation.context import STAY, Context, Flow, MenuItem, Next, State, choice
from bot.core import postcodes
from bot.core.addresses import Address as AddressValue
from bot.core.addresses import timezone_for
from bot.core.i18n import N_
from bot.core.types import Choice, Reply
from bot.domain import places

RICH_CHANNELS = ("whatsapp", "telegram")  # all places in one message there
TRIES_BEFORE_HUMAN = 3


def _yes_no(ctx: Context) -> tuple[Choice, ...]:
    _ = ctx._
    return (choice("yes", _("Yes"), "oui", "yes", "ok"), choice("no", _("No"), "non", "no"))


async def start(ctx: Context) -> Next:
    await places.ensure_loaded(ctx.session, ctx.now)
    ctx.remember(tries=0)
    known = postcodes.parse_postcode(ctx.contact.postcode or "")
    if known:
        ctx.remember(postcode=known)
        return "places.show"
    return "places.postcode"


async def ask_postcode(ctx: Context) -> Next:
    _ = ctx._
    ctx.ask(Reply(_("What is your postcode? Send the 5 digits, for example 75011."),
                  (choice("skip", _("Skip"), "passer", "skip"),)))
    return None


async def skipped(ctx: Context, choice_id: str) -> Next:
    return "menu.main" if choice_id == "skip" else None


def _keep(ctx: Context, postcode: str) -> None:
    """Remember the postcode on the person (and the time zone it implies)."""
    ctx.contact.postcode = postcode
    address = AddressValue(ctx.address.channel, ctx.address.external_id) if ctx.address else None
    ctx.contact.timezone = timezone_for(postcode, address, ctx.settings.timezone)
    ctx.remember(postcode=postcode)


async def postcode_given(ctx: Context, text: str) -> Next:
    _ = ctx._
    postcode = postcodes.parse_postcode(text)
    if postcode is None:
        tries = int(ctx.recall("tries", 0)) + 1
        ctx.remember(tries=tries)
        if tries >= TRIES_BEFORE_HUMAN:
            return "places.human"
        ctx.say(_("Sorry, this is not a postcode. Send the 5 digits, for example 93200."))
        return STAY
    _keep(ctx, postcode)
    return "places.show"


async def show(ctx: Context) -> Next:
    _ = ctx._
    postcode = ctx.recall("postcode") or ""
    found = await places.nearest(ctx.session, postcode)
    ctx.event("places.shown", found=len(found), departement=postcodes.departement(postcode))
    if not found:
        ctx.say(_("Sorry, we do not know a help place near {postcode} yet.", postcode=postcode))
        return "places.human"
    labels = {"phone": _("Phone: {phone}"), "hours": _("Hours: {hours}")}
    header = _("Places near {postcode} where someone can help you:", postcode=postcode)
    blocks = [places.place_lines(place, ctx.contact.language, labels) for place in found]
    if ctx.address is not None and ctx.address.channel in RICH_CHANNELS:
        ctx.say("\n\n".join([header, *("\n".join(lines) for lines in blocks)]))
    else:  # SMS and plain text: one message per place, each at most 2 segments
        ctx.say(header)
        for lines in blocks:
            ctx.say(places.fit_sms(lines))
    return "places.next"


async def what_next(ctx: Context) -> Next:
    _ = ctx._
    ctx.ask(Reply(_("To look elsewhere, send another postcode."),
                  (choice("menu", _("Back to the menu")),
                   choice("human", _("Talk to a person"), "parler", "personne"))))
    return None


async def next_chosen(ctx: Context, choice_id: str) -> Next:
    if choice_id == "human":
        from bot.flows.escalation import request_human

        return await request_human(ctx, source="places")
    return "menu.main"


async def other_postcode(ctx: Context, text: str) -> Next:
    postcode = postcodes.parse_postcode(text)
    if postcode is None:
        return None
    _keep(ctx, postcode)
    return "places.show"


async def offer_human(ctx: Context) -> Next:
    _ = ctx._
    ctx.ask(Reply(_("Do you want a person to help you?"), _yes_no(ctx)))
    return None


async def human_answered(ctx: Context, choice_id: str) -> Next:
    if choice_id == "yes":
        from bot.flows.escalation import request_human

        return await request_human(ctx, source="places")
    return "menu.main"


FLOW = (
    Flow(
        "places",
        {
            "postcode": State(enter=ask_postcode, on_choice=skipped, on_text=postcode_given),
            "show": State(enter=show),
            "next": State(enter=what_next, on_choice=next_chosen, on_text=other_postcode),
            "human": State(enter=offer_human, on_choice=human_answered),
        },
    )
)

MENU_ITEM = MenuItem("places", N_("Find a place near me"), ("lieu", "lieux", "place", "places"),
                  start)
