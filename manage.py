#!/usr/bin/env python
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsvc.settings")
    from chatsvc.core.event_loop import prefer_uvloop

    prefer_uvloop(sys.argv)  # before Django starts: importing daphne picks the loop
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
