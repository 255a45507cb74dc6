"""Private data a person sent (a password, a card or social-security number) is masked
before it is stored (``bot.core.pii``); this hook kindly tells them, once a day at most, not to
send such things. It never handles the event itself: the message then goes on as usual."""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.conversation.context import Context
from bot.domain.staff import directory_for, staff_for_contact

WARN_AGAIN_AFTER = timedelta(hours=24)
WARNED_AT = "private_data_warned_at"


async def warn_about_private_data(ctx: Context) -> bool:
    message = ctx.message
    if message is None or not message.masked:
        return False
    ctx.event("private_data.masked", kinds=sorted(message.masked))
    last = ctx.recall(WARNED_AT)
    if last is not None and ctx.now - datetime.fromisoformat(last) < WARN_AGAIN_AFTER:
        return False
    if await _is_staff(ctx):
        return False
    ctx.say(ctx._("We hid the private code or number you sent: keep it to yourself."))
    ctx.remember(**{WARNED_AT: ctx.now.isoformat()})
    return False


async def _is_staff(ctx: Context) -> bool:
    """From the staff directory when this event loaded it (the staff hook runs first),
    else from the database."""
    directory = directory_for(ctx.session)
    if directory.loaded_for(ctx.session):
        return directory.is_staff_contact(ctx.contact.id)
    return await staff_for_contact(ctx.session, ctx.contact.id) is not None
