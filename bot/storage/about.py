"""Which people a transaction's staff-side rows are about.

A row written to a staff member (an urgent alert, a take summary, a relay, a notice listing
several tickets, the answer to ``/queue``) and a staff member's own stored message (a reply, a
note) name or quote citizens. Erasing one of them must delete those rows too, so each such row
is linked to every person whose ticket the transaction read (``bot.domain.tickets.queue``
mentions them when
it loads a ticket). Linking one person too many only deletes a staff-side copy; linking one
too few would leave a victim's words behind, so the rule errs on the side of more links.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

KEY = "relais.about"


def mention(session: AsyncSession, *contact_ids: int | None) -> None:
    """Note that this transaction read about these people."""
    seen: set[int] = session.info.setdefault(KEY, set())
    seen.update(cid for cid in contact_ids if cid is not None)


def mentioned(session: AsyncSession, also: Iterable[int] = ()) -> set[int]:
    """The people this transaction read about, and ``also``."""
    return set(session.info.get(KEY, ())) | set(also)
