"""`appliance token create|list|revoke`, `appliance user ...`, `appliance keys rotate`: accounts at the console.

A token made here is a named app token recorded in the store (listable, revocable), printed
on the last line. Passwords are read without echo, or from stdin with --password-stdin.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from appliance.cli.base import EXIT_BAD_INPUT, CliError, actions, print_json, run_command
from appliance.config import ApplianceConfig
from appliance.control.caller import Role
from appliance.control.users import IssuedToken

ROLES = [r.value for r in Role]


def register(commands: Any) -> None:
    token = actions(commands, "token", "device and app tokens for the control plane")
    create = token.add_parser("create", help="make a named token with a role; it is printed on the last line")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", help="what the device or app is (default: cli-<role>)")
    create.add_argument("--subject", dest="name", help=argparse.SUPPRESS)  # the name before tokens had names
    create.add_argument("--ttl", type=int, default=None, metavar="SECONDS",
                        help="lifetime (default: security.token_ttl_s)")
    create.set_defaults(handler=_create)
    token.add_parser("list", help="tokens with name, role and expiry (not the tokens)").set_defaults(
        handler=lambda config, _args: _print(config, "tokens.list", {}))
    revoke = token.add_parser("revoke", help="revoke a token by its id (jti)")
    revoke.add_argument("jti")
    revoke.set_defaults(handler=lambda config, args: _print(config, "tokens.revoke", {"jti": args.jti}))

    user = actions(commands, "user", "the people who log in to the admin page and the API")
    add = user.add_parser("add", help="a new user (asks for the password)")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(handler=_add_user)
    passwd = user.add_parser("passwd", help="set a user's password (asks for it)")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true")
    passwd.set_defaults(handler=_passwd)
    user.add_parser("list", help="users with role, state and lockout").set_defaults(
        handler=lambda config, _args: _print(config, "users.list", {}))
    for action, change, text in (("disable", {"disabled": True}, "stop a user from logging in; ends their sessions"),
                                 ("enable", {"disabled": False}, "let a disabled user log in again"),
                                 ("unlock", {"unlock": True}, "clear a user's failed logins and lockout")):
        parser = user.add_parser(action, help=text)
        parser.add_argument("username")
        parser.set_defaults(handler=lambda config, args, change=change: _print(
            config, "users.update", {"username": args.username, **change}))

    keys = actions(commands, "keys", "the keys that sign tokens")
    keys.add_parser("rotate", help="sign with a new key; the old one verifies until its tokens expire").set_defaults(
        handler=lambda config, _args: _print(config, "keys.rotate", {}))


def _print(config: ApplianceConfig, command: str, payload: dict[str, Any]) -> int:
    print_json(run_command(config, command, payload))
    return 0


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise CliError("the two passwords differ", EXIT_BAD_INPUT)
    return first


def _add_user(config: ApplianceConfig, args: argparse.Namespace) -> int:
    return _print(config, "users.create", {"username": args.username, "role": args.role,
                                           "password": _password(args.password_stdin)})


def _passwd(config: ApplianceConfig, args: argparse.Namespace) -> int:
    return _print(config, "users.update", {"username": args.username, "password": _password(args.password_stdin)})


def _create(config: ApplianceConfig, args: argparse.Namespace) -> int:
    payload: dict[str, Any] = {"name": args.name or f"cli-{args.role}", "role": args.role}
    if args.ttl is not None:
        payload["ttl_s"] = args.ttl
    issued = run_command(config, "tokens.create", payload)
    assert isinstance(issued, IssuedToken)
    sys.stderr.write(f"token {issued.name!r} ({issued.role.value}, id {issued.jti}), valid until "
                     f"{issued.expires_at:.0f} (unix time):\n")
    sys.stdout.write(issued.token + "\n")
    return 0
