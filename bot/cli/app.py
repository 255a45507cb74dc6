"""The ``relais`` command, assembled once: every sub-command listed here, in the order
``relais --help`` shows them; importing a command module registers nothing."""

from __future__ import annotations

from bot.cli import (
    broadcast,
    channels,
    chat,
    checkins,
    contacts,
    db,
    inbox,
    inspect,
    queue,
    report,
    resources,
    rights,
    serve,
    slots,
    staff,
)
from bot.cli.root import app

app.add_typer(broadcast.broadcast_app, name="broadcast")
app.add_typer(channels.channels_app, name="channels")
app.command()(chat.chat)
app.add_typer(checkins.checkins_app, name="checkins")
app.add_typer(contacts.contacts_app, name="contacts")
app.add_typer(db.db_app, name="db")
app.add_typer(inbox.inbox_app, name="inbox")
app.command("inspect")(inspect.inspect)
app.add_typer(queue.queue_app, name="queue")
app.command("report")(report.report)
app.add_typer(resources.resources_app, name="resources")
app.command("export")(rights.export)
app.command("forget")(rights.forget)
app.command()(serve.serve)
app.command()(serve.worker)
app.add_typer(slots.slots_app, name="slots")
app.add_typer(staff.staff_app, name="staff")

__all__ = ["app"]
