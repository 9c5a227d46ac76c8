"""`appliance token create`: a signed access token, printed on the last line."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from appliance.cli.base import actions, fail
from appliance.config import ApplianceConfig
from appliance.control.caller import Role

SUBJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")


def register(commands: Any) -> None:
    group = actions(commands, "token", "access tokens for the control plane")
    create = group.add_parser("create", help="print a signed token on the last line")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--subject", default="admin", help="who the token is for (default: admin)")
    create.add_argument("--ttl", type=int, default=None, metavar="SECONDS",
                        help="lifetime (default: security.token_ttl_s)")
    create.set_defaults(handler=_create)


def _create(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from appliance.control.tokens import TokenAuthority

    if not SUBJECT.fullmatch(args.subject):
        fail(f"--subject: {args.subject[:40]!r} is not 1-128 of [A-Za-z0-9._@:-]")
    ttl = config.security.token_ttl_s if args.ttl is None else args.ttl
    if not 60 <= ttl <= 365 * 86_400:
        fail(f"--ttl: must be between 60 and {365 * 86_400} seconds, got {ttl}")
    authority = TokenAuthority.from_config(config)
    token = authority.issue(args.subject, Role(args.role), ttl)
    sys.stderr.write(f"token for {args.subject} ({args.role}, {authority.algorithm}), valid {ttl} s:\n")
    sys.stdout.write(token + "\n")
    return 0
