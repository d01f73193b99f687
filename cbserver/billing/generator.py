"""The account generator: a batch of prepaid cards (PINs) with random IDs, all or nothing.

An ID is ``prefix`` (letters, then digits: ``cb1818``) followed by random digits; ``length``
counts the numeric part, the prefix's digits included, and the numeric part never starts with
0 (the manual's print-shop rule). Parameters that cannot give ``quantity`` unused IDs are
refused before anything is created, naming how many are possible. IDs come from ``secrets``;
scrypt hashing and the COPY into PostgreSQL run in worker threads in chunks, so the reactor
keeps serving while 100,000 cards are made. The CSV (the only place plaintext passwords ever
exist) is written owner-only to ``csv_dir`` and its path returned.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from twisted.internet.interfaces import IReactorThreads

from cbserver.billing import passwords
from cbserver.billing import validation as v
from cbserver.billing.accounts import ACCOUNT, Accounts, check_account
from cbserver.billing.audit import Audited, audit_row
from cbserver.billing.catalogrules import now, resolve
from cbserver.billing.stores import ACCOUNT_COPY_COLUMNS
from cbserver.billing.validation import ConflictError, Field, ValidationError
from cbserver.config import EMAIL_PATTERN
from cbserver.logs import Logger

PREFIX_PATTERN = r"[A-Za-z]*[0-9]*"
MAX_QUANTITY = 1_000_000

GENERATOR = {
    "customer": Field(v.reference, required=True),
    "product": Field(v.reference, required=True),
    "quantity": Field(v.integer(1, MAX_QUANTITY), required=True),
    "batch": Field(v.optional(v.text(100)), default=None),
    "new_batch": Field(v.boolean, default=True),
    "role": ACCOUNT["role"],
    "account_type": ACCOUNT["account_type"],
    "balance_control": ACCOUNT["balance_control"],
    "opening_balance": ACCOUNT["opening_balance"],
    "credit_limit": ACCOUNT["credit_limit"],
    "manual_activation": Field(v.boolean, default=True),
    "method": Field(v.choice("random"), default="random"),
    "prefix": Field(v.text(20, allow_empty=True, pattern=PREFIX_PATTERN), default=""),
    "length": Field(v.integer(1, 30), required=True),
    "service_password": Field(v.choice("auto", "none", aliases={"auto generated": "auto"}),
                              default="auto"),
    "distributor": ACCOUNT["distributor"],
    "activation_date": ACCOUNT["activation_date"],
    "expiration_date": ACCOUNT["expiration_date"],
    "avail_after_first_use_days": ACCOUNT["avail_after_first_use_days"],
    "avail_after_last_use_days": ACCOUNT["avail_after_last_use_days"],
    "ecommerce": ACCOUNT["ecommerce"],
    "web_credentials": Field(v.choice("auto", "empty", aliases={"auto-generated": "auto"}),
                             default="empty"),
    "time_zone": ACCOUNT["time_zone"],
    "language": ACCOUNT["language"],
    # Who asked for the batch: the manual mails them the CSV ([notifications] smtp).
    "notify": Field(v.string_list(v.text(254, pattern=EMAIL_PATTERN)), default=[]),
}

CSV_COLUMNS = ("id", "service_password", "web_login", "web_password", "balance", "status",
               "expiration_date")
CHUNK = 2000


@dataclass(frozen=True)
class IdSpace:
    """The IDs a prefix and length allow: ``letters`` + ``digits`` + ``free`` random digits."""

    letters: str
    digits: str
    free: int

    @property
    def size(self) -> int:
        """How many IDs the space holds (no leading zero in the numeric part)."""
        if self.free == 0:
            return 1
        return 10 ** self.free if self.digits else 9 * 10 ** (self.free - 1)

    @property
    def prefix(self) -> str:
        """The fixed start of every ID."""
        return self.letters + self.digits

    @property
    def length(self) -> int:
        """Total length of an ID."""
        return len(self.letters) + len(self.digits) + self.free

    def make(self, n: int) -> str:
        """The ``n``-th ID of the space (0 <= n < size)."""
        if self.free == 0:
            return self.prefix
        if self.digits:
            return self.prefix + str(n).zfill(self.free)
        return self.letters + str(n + 10 ** (self.free - 1))


def id_space(prefix: str, length: int) -> IdSpace:
    """Split ``prefix`` into letters and digits and check it against ``length``."""
    m = re.fullmatch(r"([A-Za-z]*)([0-9]*)", prefix)
    if m is None:
        raise ValidationError("prefix", "must be letters followed by digits, such as cb1818")
    letters, digits = m.groups()
    if digits.startswith("0"):
        raise ValidationError("prefix", "the numeric part of an ID must not start with 0")
    if len(digits) > length:
        raise ValidationError("length", f"must be at least the {len(digits)} digits of the prefix")
    return IdSpace(letters, digits, length - len(digits))


def draw_ids(space: IdSpace, quantity: int, taken: set[str], rng=None) -> list[str]:
    """``quantity`` distinct random IDs of ``space`` not in ``taken`` (ValidationError if too few)."""
    possible = space.size - len(taken)
    if quantity > possible:
        raise ValidationError("quantity", infeasible(space, quantity, possible, len(taken)))
    rng = rng or secrets.SystemRandom()
    want = quantity + len(taken)
    if want * 4 <= space.size:
        # Sparse: rejection sampling, fewer than 4/3 draws per ID on average.
        chosen: set[str] = set()
        out = []
        while len(out) < quantity:
            candidate = space.make(rng.randrange(space.size))
            if candidate not in taken and candidate not in chosen:
                chosen.add(candidate)
                out.append(candidate)
        return out
    # Dense: a uniform sample of the (small) space, large enough to survive removing the taken.
    out = []
    for n in rng.sample(range(space.size), min(space.size, want)):
        candidate = space.make(n)
        if candidate not in taken:
            out.append(candidate)
            if len(out) == quantity:
                break
    return out


def infeasible(space: IdSpace, quantity: int, possible: int, taken: int) -> str:
    """The message for a batch that cannot be generated."""
    used = f" ({taken} already in use)" if taken else ""
    return (f"cannot generate {quantity} accounts: only {possible} IDs are possible with prefix "
            f"{space.prefix!r} and ID length {space.length - len(space.letters)}{used}")


def _secrets_chunk(n: int, wanted: bool) -> tuple[list[str | None], list[str | None]]:
    """``n`` random passwords and their hashes (Nones when not wanted); run in a worker thread."""
    if not wanted:
        return [None] * n, [None] * n
    plain = [passwords.generate() for _ in range(n)]
    return plain, [passwords.hash_password(p, passwords.GENERATED) for p in plain]


def _write_csv(path: Path, rows: Iterable[tuple]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(CSV_COLUMNS)
        out.writerows(rows)


class _Rows(Sequence):
    """The COPY rows of a run, made on access from per-column lists (no 100,000 long-lived tuples
    for the garbage collector to walk while the reactor waits)."""

    def __init__(self, common: dict, ids: list[str], hashes: list, web_hashes: list, auto_web: bool):
        columns = ACCOUNT_COPY_COLUMNS
        self._template = [common.get(c) for c in columns]
        self._at = [columns.index(c) for c in ("id", "password_hash", "web_login", "web_password_hash")]
        self._ids, self._hashes, self._web_hashes, self._auto_web = ids, hashes, web_hashes, auto_web

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        row = list(self._template)
        account_id = self._ids[i]
        at_id, at_hash, at_login, at_web = self._at
        row[at_id], row[at_hash], row[at_web] = account_id, self._hashes[i], self._web_hashes[i]
        row[at_login] = account_id if self._auto_web else None
        return row


def _write_run_csv(partial: Path, common: dict, ids: list[str], service: list, web: list, auto_web: bool,
                   expiration: dt.datetime | None) -> None:
    """Write the run's CSV (in a worker thread: it is all CPU and disk)."""
    expiry = expiration.isoformat() if expiration else ""
    balance, status = str(common["balance"]), common["status"]
    _write_csv(partial, ((i, s or "", i if auto_web else "", w or "", balance, status, expiry)
                         for i, s, w in zip(ids, service, web, strict=True)))


def _csv_name(batch: str, when: dt.datetime) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", batch).strip("._") or "batch"
    return f"accounts-{safe}-{when:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}.csv"


class Generator(Audited):
    """Generates batches of accounts for a customer and product (each run audited)."""

    log = Logger()

    def __init__(self, store, clock, csv_dir: str | os.PathLike, mailer=None, actor=None):
        self.store = store  # ICatalogStore
        self.clock = clock
        if actor is not None:
            self.actor = actor
        self.csv_dir = Path(csv_dir)
        self.accounts = Accounts(store, clock, actor)
        # Notification mail (cbserver.mail.Mailer), sent to each request's ``notify`` and to
        # its config's generator_recipients.
        self.mailer = mailer

    def _check_csv_dir(self) -> None:
        """Make sure the CSV can be written (owner-only folder) before anything is created."""
        try:
            self.csv_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise ValidationError("csv_dir", f"cannot create {self.csv_dir}: {e.strerror}") from None
        if not os.access(self.csv_dir, os.W_OK | os.X_OK):
            raise ValidationError("csv_dir", f"cannot write in {self.csv_dir}")

    def _from_thread(self, progress, *args) -> None:
        if progress is None:
            return
        if IReactorThreads.providedBy(self.clock):
            self.clock.callFromThread(progress, *args)
        else:
            progress(*args)

    async def check(self, data: Mapping) -> tuple[dict, IdSpace, dict]:
        """Validate a request fully (feasibility included) without writing anything."""
        req = v.clean(GENERATOR, data)
        row = {**req, "password": None, "web_password": None, "web_login": None, "internal": False}
        check_account(row)
        if req["batch"] is None:
            raise ValidationError("batch", "name the new batch (or an existing one with new_batch false)")
        space = id_space(req["prefix"], req["length"])
        self._check_csv_dir()
        if req["notify"] and not (self.mailer is not None and self.mailer.enabled):
            raise ValidationError("notify", "e-mail notifications are not configured "
                                            "([notifications] smtp)")

        async def run(tx):
            c = await resolve(tx, "customers", req["customer"], "customer", kind="customer")
            links = await self.accounts._links(tx, {"product": req["product"]}, c)
            links["customer_id"] = c["id"]
            batch = await tx.get_by("batches", "name", req["batch"])
            if req["new_batch"] and batch is not None:
                raise ConflictError(f"batch {req['batch']!r} already exists", "batch")
            if not req["new_batch"]:
                if batch is None:
                    raise ValidationError("batch", f"no batch {req['batch']!r}")
                if batch["customer_id"] != c["id"]:
                    raise ValidationError("batch", f"batch {req['batch']!r} belongs to another customer")
                links["batch_id"] = batch["id"]
            taken = await tx.count_pattern(space.prefix, space.length)
            if req["quantity"] > space.size - taken:
                raise ValidationError("quantity", infeasible(space, req["quantity"],
                                                             space.size - taken, taken))
            return links

        return req, space, await self.store.transaction(run)

    async def generate(self, data: Mapping, progress: Callable[[str, int, int], None] | None = None) -> dict:
        """Generate the batch; ``progress(stage, done, total)`` is called on the reactor thread."""
        req, space, links = await self.check(data)
        quantity = req["quantity"]
        for attempt in range(3):
            taken = await self.store.transaction(lambda tx: tx.ids_with_pattern(space.prefix, space.length))
            ids = await self.accounts.in_thread(draw_ids, space, quantity, taken)
            try:
                result = await self._write(req, links, ids, progress)
            except ConflictError as e:
                if e.field != "id" or attempt == 2:
                    raise
            else:
                return await self._notify(req, result)
        raise AssertionError("unreachable")

    async def _notify(self, req: dict, result: dict) -> dict:
        """Mail the CSV to whoever should hear of the batch; the outcome goes in the result.

        The batch is committed by now: a mail that cannot be sent is reported (a warning and
        ``notification.sent`` false), never undone, and the CSV stays in the cards folder.
        """
        if self.mailer is None or not self.mailer.enabled:
            return result
        to = list(dict.fromkeys([*req["notify"], *self.mailer.cfg.generator_recipients]))
        if not to:
            return result
        path = Path(result["csv_path"])
        body = (f"{result['quantity']} accounts were generated in batch {result['batch']!r} "
                f"for customer {req['customer']!r}, product {req['product']!r}.\n"
                f"Status: {result['status']}. First ID: {result['first_id']}.\n\n"
                f"The attached CSV holds their IDs and passwords; a copy is kept on the server "
                f"at {path}.\n")
        try:
            data = await self.accounts.in_thread(path.read_bytes)
            await self.mailer.send(to, f"cbserver: {result['quantity']} accounts generated in "
                                       f"batch {result['batch']}", body,
                                   [(path.name, "text/csv", data)])
        except Exception as e:  # noqa: BLE001 - any failure is reported, the batch stays
            self.log.warn("batch {batch}: the notification to {to} was not sent ({error}); "
                          "the CSV is at {path}", batch=result["batch"], to=", ".join(to),
                          error=str(e), path=str(path))
            return {**result, "notification": {"to": to, "sent": False, "error": str(e)}}
        return {**result, "notification": {"to": to, "sent": True}}

    async def _write(self, req: dict, links: dict, ids: list[str], progress) -> dict:
        quantity = len(ids)
        service: list[str | None] = []
        web: list[str | None] = []
        hashes: list[str | None] = []
        web_hashes: list[str | None] = []
        for start in range(0, quantity, CHUNK):
            n = min(CHUNK, quantity - start)
            for plain, hashed, wanted in ((service, hashes, req["service_password"] == "auto"),
                                          (web, web_hashes, req["web_credentials"] == "auto")):
                chunk_plain, chunk_hashed = await self.accounts.in_thread(_secrets_chunk, n, wanted)
                plain += chunk_plain
                hashed += chunk_hashed
            if progress is not None:
                progress("hashing", start + n, quantity)
        status = "inactive" if req["manual_activation"] else "active"
        balance = req["opening_balance"] if req["account_type"] == "debit" else Decimal(0)
        common = {**{k: req[k] for k in ("role", "account_type", "balance_control", "credit_limit",
                                         "activation_date", "expiration_date",
                                         "avail_after_first_use_days", "avail_after_last_use_days",
                                         "time_zone", "language", "distributor", "ecommerce")},
                  "customer_id": links["customer_id"], "product_id": links["product_id"],
                  "batch_id": None, "balance": balance, "opening_balance": req["opening_balance"],
                  "status": status, "internal": False}
        auto_web = req["web_credentials"] == "auto"
        self._check_csv_dir()
        when = now(self.clock)
        path = (self.csv_dir / _csv_name(req["batch"], when)).resolve()
        partial = path.with_suffix(".partial")
        params = {k: (str(val) if isinstance(val, Decimal | dt.datetime) else val)
                  for k, val in req.items()}
        new_batch = {"name": req["batch"], "customer_id": links["customer_id"]} if req["new_batch"] else None
        try:
            await self.accounts.in_thread(_write_run_csv, partial, common, ids, service, web, auto_web,
                                          req["expiration_date"])
            rows = _Rows(common, ids, hashes, web_hashes, auto_web)
            batch_id = await self.accounts.in_thread(
                lambda: self.store.write_accounts(
                    batch=new_batch, batch_id=links.get("batch_id"),
                    run={"quantity": quantity, "csv_path": str(path),
                         "parameters": json.dumps(params, default=str, sort_keys=True)},
                    rows=rows, progress=lambda n: self._from_thread(progress, "writing", n, quantity),
                    audit=audit_row(self.actor, "batch", req["batch"], "generate", None,
                                    {"quantity": quantity, "status": status, "csv_path": str(path),
                                     "first_id": ids[0] if ids else None, "parameters": params})))
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.rename(path)
        self.log.info("generated {quantity} accounts batch={batch} status={status} csv={path}",
                      quantity=quantity, batch=req["batch"], status=status, path=str(path))
        return {"batch": req["batch"], "batch_id": batch_id, "quantity": quantity,
                "status": status, "csv_path": str(path), "first_id": ids[0] if ids else None}

