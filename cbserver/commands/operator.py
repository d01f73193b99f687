"""``cbserver operator``: the console's operators (add, list, disable, enable, password, role).

A password is read from the terminal (asked twice, not echoed) or, with ``--password-stdin``,
from the first line of standard input, never from the command line (which other users of the
machine can read in the process list). Changing a password or disabling an operator ends
that operator's open sessions.
"""

from __future__ import annotations

import getpass
import re
import sys

from cbserver.billing.passwords import check_password
from cbserver.billing.validation import ValidationError
from cbserver.cli import CommandError
from cbserver.commands.db import add_dsn_arguments, dsn_from_args
from cbserver.db import operators_store as store
from cbserver.db.sync import sync_cursor
from cbserver.errors import DatabaseError, DatabaseUnavailable
from cbserver.operators import ROLES, hash_operator_password

NAME = re.compile(r"^[a-z][a-z0-9._-]{0,62}$")


def register(sub) -> None:
    """Add the ``operator`` sub-command and its actions."""
    p = sub.add_parser("operator", help="operators of the web console (/ui/ on the admin endpoint)")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    add = actions.add_parser("add", help="add an operator (the password is asked for)")
    add.add_argument("name", help="login name: lower case letters, digits, . _ -")
    add.add_argument("--role", choices=ROLES, required=True,
                     help="admin (may change everything) or readonly (may only look)")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    add_dsn_arguments(add)
    add.set_defaults(func=run_add)
    lst = actions.add_parser("list", help="list operators")
    add_dsn_arguments(lst)
    lst.set_defaults(func=run_list)
    for action, helptext in (("disable", "disable an operator (ends their sessions)"),
                             ("enable", "enable a disabled operator")):
        a = actions.add_parser(action, help=helptext)
        a.add_argument("name")
        add_dsn_arguments(a)
        a.set_defaults(func=run_disable if action == "disable" else run_enable)
    pw = actions.add_parser("password", help="set a new password (ends their sessions)")
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true",
                    help="read the password from the first line of standard input")
    add_dsn_arguments(pw)
    pw.set_defaults(func=run_password)
    role = actions.add_parser("role", help="change an operator's role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    add_dsn_arguments(role)
    role.set_defaults(func=run_role)


def _name(text: str) -> str:
    """A valid operator name, or a ``CommandError`` saying what one looks like."""
    if not NAME.match(text or ""):
        raise CommandError(f"{text!r} is not a valid operator name (lower case letter first, "
                           "then letters, digits, '.', '_' or '-'; at most 63)")
    return text


def read_password(from_stdin: bool) -> str:
    """The new password, checked as strong, from stdin or the terminal (asked twice)."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != password:
            raise CommandError("the two passwords differ")
    try:
        return check_password("password", password, strong=True)
    except ValidationError as e:
        raise CommandError(f"password {e.reason}") from None


def _run(args, fn):
    """``fn(cursor)`` in one transaction on the DSN's database, errors as one line."""
    try:
        with sync_cursor(dsn_from_args(args)) as cur:
            return fn(cur)
    except (DatabaseError, DatabaseUnavailable) as e:
        raise CommandError(str(e)) from None


def run_add(args) -> int:
    """``operator add NAME --role ROLE``."""
    name = _name(args.name)
    password = read_password(args.password_stdin)
    if not _run(args, lambda cur: store.add_operator_sync(cur, name, args.role,
                                                           hash_operator_password(password))):
        raise CommandError(f"operator {name!r} already exists (use 'operator password')")
    print(f"operator {name} added ({args.role})")
    return 0


def run_list(args) -> int:
    """``operator list``: one line each, name, role, state."""
    for op in _run(args, store.list_operators_sync):
        state = "disabled" if op["disabled"] else "enabled"
        print(f"{op['name']}\t{op['role']}\t{state}\tcreated {op['created_at']:%Y-%m-%d %H:%M}")
    return 0


def _change(args, fn, done: str) -> int:
    """Run a change of one operator; ``CommandError`` if there is no such operator."""
    name = _name(args.name)
    if not _run(args, lambda cur: fn(cur, name)):
        raise CommandError(f"no operator named {name!r}")
    print(f"operator {name} {done}")
    return 0


def run_disable(args) -> int:
    """``operator disable NAME``."""
    return _change(args, lambda cur, n: store.set_disabled_sync(cur, n, True), "disabled")


def run_enable(args) -> int:
    """``operator enable NAME``."""
    return _change(args, lambda cur, n: store.set_disabled_sync(cur, n, False), "enabled")


def run_password(args) -> int:
    """``operator password NAME``."""
    password = read_password(args.password_stdin)
    digest = hash_operator_password(password)
    return _change(args, lambda cur, n: store.set_password_sync(cur, n, digest),
                   "has a new password")


def run_role(args) -> int:
    """``operator role NAME ROLE``."""
    return _change(args, lambda cur, n: store.set_role_sync(cur, n, args.role),
                   f"is now {args.role}")
