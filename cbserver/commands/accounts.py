"""``cbserver accounts generate|activate|show|recharge|payments``: the generator and card life cycle.

``generate`` takes every field of the manual's account generator as an option, shows a
progress bar on stderr while it hashes and writes, and prints the path of the CSV (the only
place the generated passwords exist, readable by its owner only). ``recharge`` pays money into
an account (or, with ``--customer``, into a customer's balance) and prints the payment row;
``--refund`` gives money back instead (``cbserver.billing.payments`` has the sign rules).
"""

from __future__ import annotations

import sys
from pathlib import Path

from cbserver.billing.generator import Generator
from cbserver.billing.payments import Payments
from cbserver.cli import CommandError
from cbserver.commands.catalog import print_json, run_service
from cbserver.commands.db import add_dsn_arguments, config_from_args
from cbserver.config import cards_dir
from cbserver.db.stores import PostgresCatalogStore
from cbserver.mail import Mailer

#: option -> generator field, for options that map one to one.
_OPTIONS = {
    "customer": "customer", "product": "product", "quantity": "quantity", "batch": "batch",
    "role": "role", "type": "account_type", "balance_control": "balance_control",
    "opening_balance": "opening_balance", "credit_limit": "credit_limit", "method": "method",
    "prefix": "prefix", "length": "length", "service_password": "service_password",
    "distributor": "distributor", "activation_date": "activation_date",
    "expiration_date": "expiration_date", "avail_after_first_use": "avail_after_first_use_days",
    "avail_after_last_use": "avail_after_last_use_days", "web_credentials": "web_credentials",
    "time_zone": "time_zone", "language": "language",
}


def register(sub) -> None:
    """Add the ``accounts`` sub-commands."""
    p = sub.add_parser("accounts", help="generate, activate and show accounts")
    s = p.add_subparsers(dest="action", metavar="ACTION")
    s.required = True
    g = s.add_parser("generate", help="generate a batch of accounts (PINs); prints the CSV's path")
    g.add_argument("--customer", required=True, help="customer name or id")
    g.add_argument("--product", required=True, help="product name or id")
    g.add_argument("--quantity", required=True, type=int, help="number of accounts")
    g.add_argument("--batch", required=True, help="batch name (new unless --existing-batch)")
    g.add_argument("--existing-batch", action="store_true", help="add to an existing batch")
    g.add_argument("--role", help="account role (universal)")
    g.add_argument("--type", choices=("debit", "credit"), help="account type (default debit)")
    g.add_argument("--balance-control", choices=("individual", "subordinate"))
    g.add_argument("--opening-balance", help="initial balance of each card (debit)")
    g.add_argument("--credit-limit", help="credit limit (credit accounts only)")
    g.add_argument("--active", action="store_true",
                   help="generate active cards (default: inactive, requiring manual activation)")
    g.add_argument("--method", choices=("random",), help="generation method (random)")
    g.add_argument("--prefix", help="ID prefix, letters then digits (e.g. cb1818)")
    g.add_argument("--length", required=True, type=int,
                   help="length of the numeric part of the ID, the prefix's digits included")
    g.add_argument("--service-password", choices=("auto", "none"), help="auto-generated (default) or none")
    g.add_argument("--distributor")
    g.add_argument("--activation-date", help="ISO 8601 date-time with a time zone")
    g.add_argument("--expiration-date", help="ISO 8601 date-time with a time zone")
    g.add_argument("--avail-after-first-use", type=int, metavar="DAYS")
    g.add_argument("--avail-after-last-use", type=int, metavar="DAYS")
    g.add_argument("--ecommerce", action="store_true", help="e-commerce enabled")
    g.add_argument("--web-credentials", choices=("auto", "empty"), help="web self-care credentials")
    g.add_argument("--time-zone", help="IANA time zone for web self-care")
    g.add_argument("--language", help="web interface language (en, pt-BR...)")
    g.add_argument("--notify", action="append", metavar="EMAIL",
                   help="mail the CSV to this address too (repeatable; needs --config with "
                        "[notifications] smtp)")
    g.add_argument("--csv-dir", help="folder for the CSV (default: [server] cards_dir with --config, "
                                     "else ./cards)")
    g.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress bar on stderr (auto: when stderr is a terminal)")
    add_dsn_arguments(g)
    g.set_defaults(func=_generate)

    a = s.add_parser("activate", help="activate one account or a whole batch")
    which = a.add_mutually_exclusive_group(required=True)
    which.add_argument("--batch", help="batch name or id")
    which.add_argument("--account", help="account ID")
    add_dsn_arguments(a)
    a.set_defaults(func=_activate)

    sh = s.add_parser("show", help="show one account as JSON (never its passwords)")
    sh.add_argument("id", help="account ID")
    add_dsn_arguments(sh)
    sh.set_defaults(func=_show)

    r = s.add_parser("recharge", help="pay money into an account or a customer (prints the payment)")
    _owner_arguments(r)
    r.add_argument("--amount", required=True, help="a positive amount, e.g. 10.00 (no more "
                                                   "decimals than the currency has)")
    r.add_argument("--note", default="", help="free text: receipt number, reason...")
    r.add_argument("--currency", help="refused unless it is the balance's currency (a safety check)")
    r.add_argument("--refund", action="store_true",
                   help="give --amount back instead (corrects a mistaken payment)")
    add_dsn_arguments(r)
    r.set_defaults(func=_recharge)

    pl = s.add_parser("payments", help="list the payments and refunds of an account or a customer")
    _owner_arguments(pl)
    pl.add_argument("--limit", default=50)
    pl.add_argument("--offset", default=0)
    add_dsn_arguments(pl)
    pl.set_defaults(func=_payments)


def _owner_arguments(p) -> None:
    """An account ID, or ``--customer`` for a customer's balance: exactly one."""
    p.add_argument("id", nargs="?", help="account ID")
    p.add_argument("--customer", help="customer name or id (instead of an account ID)")


def generator_request(args) -> dict:
    """The generator fields named by the options given (others take the service's defaults)."""
    data = {field: getattr(args, opt) for opt, field in _OPTIONS.items() if getattr(args, opt) is not None}
    data["new_batch"] = not args.existing_batch
    data["manual_activation"] = not args.active
    data["ecommerce"] = bool(args.ecommerce)
    if args.notify:
        data["notify"] = list(args.notify)
    return data


def csv_dir(args, cfg) -> Path:
    """Where the CSV goes: ``--csv-dir``, else the config's cards folder, else ./cards."""
    if args.csv_dir:
        return Path(args.csv_dir)
    return cards_dir(cfg) if cfg is not None else Path("cards")


class ProgressBar:
    """A one-line progress bar on stderr (only when stderr is a terminal, unless forced)."""

    def __init__(self, stream=sys.stderr, width: int = 30, force: bool = False):
        self.stream = stream
        self.width = width
        self.enabled = force or stream.isatty()
        self.last = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Draw ``done`` of ``total`` for ``stage``."""
        if not self.enabled:
            return
        percent = 100 * done // max(total, 1)
        if (stage, percent) == self.last:
            return
        if self.last is not None and self.last[0] != stage:
            self.stream.write("\n")
        self.last = (stage, percent)
        filled = self.width * done // max(total, 1)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{stage:8} [{bar}] {percent:3d}% {done}/{total}")
        if stage == "writing" and done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _generate(args) -> int:
    """Run the generator and print the CSV path."""
    data = generator_request(args)
    cfg = config_from_args(args)
    folder = csv_dir(args, cfg)
    bar = ProgressBar(force=args.progress == "always")
    if args.progress == "never":
        bar.enabled = False

    async def go(services):
        mailer = Mailer(cfg.notifications, services.reactor) if cfg is not None else None
        return await Generator(PostgresCatalogStore(services.db), services.reactor, folder, mailer,
                               services.actor).generate(
            data, progress=bar)

    result = run_service(args, go)
    print(f"generated {result['quantity']} account(s) in batch {result['batch']!r} "
          f"({result['status']})", file=sys.stderr)
    note = result.get("notification")
    if note is not None and note["sent"]:
        print(f"the CSV was mailed to {', '.join(note['to'])}", file=sys.stderr)
    elif note is not None:
        print(f"warning: the CSV was not mailed to {', '.join(note['to'])}: {note['error']}",
              file=sys.stderr)
    print(result["csv_path"])
    return 0


def _activate(args) -> int:
    """Activate a batch or one account."""

    async def go(services):
        if args.batch:
            return await services.accounts.activate_batch(args.batch)
        return await services.accounts.activate_account(args.account)

    n = run_service(args, go)
    print(f"{n} account(s) activated")
    return 0


def _show(args) -> int:
    """Print one account."""

    async def go(services):
        return await services.accounts.get_account(args.id)

    print_json(run_service(args, go))
    return 0


def _owner(args) -> tuple[str, str]:
    """("account", ID) or ("customer", KEY); exactly one must be given."""
    if (args.id is None) == (args.customer is None):
        raise CommandError("name an account ID or --customer KEY (one of them)")
    return ("account", args.id) if args.id is not None else ("customer", args.customer)


def _recharge(args) -> int:
    """Record a payment (or refund) and print it; balance_after is the new balance."""
    owner, key = _owner(args)
    data = {"amount": args.amount, "note": args.note,
            "kind": "refund" if args.refund else "payment"}
    if args.currency:
        data["currency"] = args.currency

    async def go(services):
        payments = Payments(PostgresCatalogStore(services.db), services.reactor, services.actor)
        if owner == "account":
            return await payments.recharge_account(key, data, made_by="cli")
        return await payments.recharge_customer(key, data, made_by="cli")

    print_json(run_service(args, go))
    return 0


def _payments(args) -> int:
    """Print a page of payments, newest first."""
    owner, key = _owner(args)

    async def go(services):
        payments = Payments(PostgresCatalogStore(services.db), services.reactor, services.actor)
        if owner == "account":
            return await payments.list_account_payments(key, args.limit, args.offset)
        return await payments.list_customer_payments(key, args.limit, args.offset)

    print_json(run_service(args, go))
    return 0
