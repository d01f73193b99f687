"""``cbserver quote``: what a call would cost, as one JSON object (the operator's price check).

The tariff is named (``--tariff``) or selected as a call of ``--account`` would select it:
the account's product's rating-list entry for voice at ``--node`` with ``--access-code``
(``WEBCALLBACK`` by default), else its entry with an empty access code. Output is
``Quote.to_json()``: sorted keys, money as text with 5 decimals.
"""

from __future__ import annotations

import datetime as dt

from cbserver.billing.authorize import DEFAULT_ACCESS_CODE, choose_entry
from cbserver.billing.model import RatingError
from cbserver.billing.numbers import normalise_number
from cbserver.billing.rating import MAX_DURATION, quote
from cbserver.cli import CommandError
from cbserver.commands.db import add_dsn_arguments, config_from_args, dsn_from_args
from cbserver.db.authz_store import fetch_account_sync, fetch_entries_sync
from cbserver.db.sync import sync_cursor
from cbserver.db.tariff_loader import TariffNotFound, load_tariff_sync
from cbserver.errors import DatabaseError, DatabaseUnavailable


def register(sub) -> None:
    """Add the ``quote`` sub-command."""
    p = sub.add_parser("quote", help="price a call: matched rate, charged seconds, amount (JSON)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--tariff", metavar="NAME", help="price by this tariff")
    who.add_argument("--account", metavar="ID", help="price by the tariff this account's calls use")
    p.add_argument("--number", required=True, metavar="DIGITS", help="the dialled number")
    p.add_argument("--duration", required=True, metavar="SECONDS", help="whole seconds connected")
    p.add_argument("--at", metavar="ISO-8601", help="connect time with its zone (default: now)")
    p.add_argument("--access-code", default=DEFAULT_ACCESS_CODE, help="rating-list access code")
    p.add_argument("--node", help="rating-list node (default: [server] node, or node1)")
    add_dsn_arguments(p)
    p.set_defaults(func=run)


def parse_duration(text: str) -> int:
    """Whole seconds from 0 to ``MAX_DURATION``."""
    try:
        value = int(text.strip())
    except ValueError:
        raise CommandError(f"--duration: expected whole seconds, got {text!r}") from None
    if not 0 <= value <= MAX_DURATION:
        raise CommandError(f"--duration: must be from 0 to {MAX_DURATION} seconds, got {value}")
    return value


def parse_time(text: str | None) -> dt.datetime:
    """An aware datetime from ISO 8601 text (a zone is required); now when absent."""
    if text is None:
        return dt.datetime.now(dt.UTC)
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--at: not an ISO-8601 date-time: {text!r}") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise CommandError(f"--at: {text!r} has no time zone (add Z or an offset such as +01:00)")
    return value


def _node(args) -> str:
    """The node named on the command line, else the config's, else node1."""
    if args.node:
        return args.node
    cfg = config_from_args(args)
    return cfg.server.node if cfg is not None else "node1"


def _tariff_for_account(cur, args):
    """The tariff a call of ``--account`` is rated by."""
    account = fetch_account_sync(cur, args.account)
    if account is None:
        raise CommandError(f"unknown account {args.account!r}")
    node = _node(args)
    entries = fetch_entries_sync(cur, account.product_id, node, [args.access_code, ""])
    entry = choose_entry(entries, args.access_code)
    if entry is None:
        raise CommandError(f"account {args.account}: its product has no voice rating entry for node "
                           f"{node!r} (nor for any node, '*') and access code "
                           f"{args.access_code!r} (nor an empty one)")
    return load_tariff_sync(cur, tariff_id=entry.tariff_id, number=args.number)


def run(args) -> int:
    """Print the quote as one JSON line."""
    duration = parse_duration(args.duration)
    at = parse_time(args.at)
    try:
        normalise_number(args.number)
    except RatingError as e:
        raise CommandError(str(e)) from None
    dsn = dsn_from_args(args)
    try:
        with sync_cursor(dsn, timeout=10) as cur:
            if args.tariff is not None:
                tariff = load_tariff_sync(cur, name=args.tariff, number=args.number)
            else:
                tariff = _tariff_for_account(cur, args)
    except DatabaseUnavailable as e:
        raise CommandError(f"cannot connect: {str(e).splitlines()[0]}") from None
    except TariffNotFound as e:
        raise CommandError(f"unknown tariff: {e}") from None
    except (RatingError, ValueError) as e:
        raise CommandError(f"tariff cannot be used: {e}") from None
    except DatabaseError as e:
        raise CommandError(f"database error: {str(e).splitlines()[0]} "
                           "(is the schema current? `cbserver db upgrade`)") from None
    try:
        result = quote(tariff.rates, args.number, duration, at)
    except RatingError as e:
        raise CommandError(str(e)) from None
    print(result.to_json())
    return 0
