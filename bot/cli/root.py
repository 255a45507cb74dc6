from __future__ import annotations

import typer

app = typer.Typer(
    name="relais",
    help="Relais: remote support over SMS, WhatsApp and Telegram.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
