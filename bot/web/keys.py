"""What the aiohttp application holds: the running application's services."""

from aiohttp import web

from bot.app import Services

SERVICES = web.AppKey("services", Services)
