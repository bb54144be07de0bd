"""uvloop under Twisted's asyncio reactor, for the web role.

daphne is an installed app, and importing it (django.setup()) installs
Twisted's asyncio reactor on a new event loop, so uvloop's policy must be in
place before Django starts: manage.py calls `prefer_uvloop` first. Set later,
the policy changed nothing and the web role ran on the pure-Python loop.
"""

import asyncio

from chatsvc.env import env_bool

WEB_COMMANDS = ("serve",)


def prefer_uvloop(argv: list[str]) -> None:
    if argv[1:2] and argv[1] in WEB_COMMANDS and env_bool("CHAT_UVLOOP", True):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def loop_name(loop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else type(loop).__name__
