"""The sales screens: Customers, Accounts (search, balance, payments, recharge and refund),
the Account generator (a background job with its progress bar and CSV) and Batches (activate).

The generator runs as the admin API's jobs do (``AdminApp.jobs``, this node's memory): its
page polls the job's progress with htmx every second and, without JavaScript, reloads itself
(``<noscript><meta refresh>``) until the job is over, then offers the CSV of the batch.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote

from twisted.internet import defer

from cbserver.billing.validation import ConflictError, NotFound, ValidationError
from cbserver.errors import DatabaseUnavailable
from cbserver.web.console import screens_calls
from cbserver.web.console.forms import Refused, form_fields, url
from cbserver.web.console.screens import F, Screen, field_errors, form_data, shown
from cbserver.web.console.screens_catalog import CURRENCIES, _ops

MAX_FINISHED_JOBS = 100

CUSTOMER_FIELDS = [
    F("name", "Name", required=True),
    F("currency", "Currency", "select", required=True, options=CURRENCIES, create_only=True),
    F("balance_control", "Balance control", "select", options=(("postpaid", "Postpaid"),
                                                                ("prepaid", "Prepaid"))),
    F("credit_limit", "Credit limit"),
    F("customer_class", "Customer class"),
    F("billing_period", "Billing period", "select", options=(
        ("monthly", "Monthly"), ("semimonthly", "Semimonthly"), ("weekly", "Weekly"),
        ("daily", "Daily"))),
]
ACCOUNT_FIELDS = [
    F("id", "Account ID", required=True, create_only=True, hint="e.g. cb1818000001"),
    F("customer", "Customer", required=True, create_only=True, hint="name or id"),
    F("product", "Product", required=True, hint="name or id"),
    F("batch", "Batch", hint="name or id (optional)"),
    F("account_type", "Account type", "select", options=(("debit", "Debit"), ("credit", "Credit")),
      create_only=True),
    F("opening_balance", "Opening balance", create_only=True),
    F("credit_limit", "Credit limit"),
    F("status", "Status", "select", options=(("active", "Active"), ("inactive", "Inactive"))),
    F("password", "Service password", "password", hint="empty: unchanged"),
    F("web_login", "Web login"),
    F("web_password", "Web password", "password", hint="empty: unchanged"),
    F("internal", "Internal account (charged for hosted callbacks nobody identified)", "checkbox"),
]
PAYMENT_FIELDS = [
    F("amount", "Amount", required=True),
    F("kind", "Kind", "select", options=(("payment", "Recharge (payment)"), ("refund", "Refund"))),
    F("note", "Note"),
]
GENERATOR_FIELDS = [
    F("customer", "Customer", required=True, hint="name or id"),
    F("product", "Product", required=True, hint="name or id"),
    F("quantity", "How many accounts", "number", required=True),
    F("length", "ID length", "number", required=True, hint="digits after the prefix"),
    F("prefix", "ID prefix", hint="e.g. cb"),
    F("batch", "Batch", hint="name of the batch"),
    F("new_batch", "Add a new batch", "checkbox"),
    F("opening_balance", "Opening balance"),
    F("account_type", "Account type", "select", options=(("debit", "Debit"), ("credit", "Credit"))),
    F("manual_activation", "Activate the accounts later (manual activation)", "checkbox"),
    F("service_password", "Service passwords", "select",
      options=(("auto", "Generate"), ("none", "None"))),
    F("web_credentials", "Web login and password", "select",
      options=(("auto", "Generate"), ("empty", "Leave empty"))),
]
BATCH_FIELDS = [
    F("name", "Name", required=True, create_only=True),
    F("customer", "Customer", required=True, create_only=True, hint="name or id"),
]


def _drop_empty_passwords(data: dict) -> dict:
    """An empty password field means "unchanged", never "remove the password"."""
    return {k: val for k, val in data.items()
            if not (k in ("password", "web_password") and not val)}


def add_routes(console) -> None:
    """Register the sales screens on the console."""
    customers = Screen(
        "customers", "Customers", "customer", key=lambda r: str(r["id"]),
        columns=[("Name", lambda r: r["name"]), ("Currency", lambda r: r["currency"]),
                 ("Balance control", lambda r: r["balance_control"])],
        fields=CUSTOMER_FIELDS, service="accounts", ops=_ops("customer"), search="name",
        search_label="Name",
        defaults={"currency": "USD", "balance_control": "prepaid"})

    async def account_extra(console, request, session, row, values):
        """An account's balance, what calls in progress hold on it, its payments and the
        recharge/refund form."""
        if row is None:
            return {}
        payments = await console.service("payments", request, session).list_account_payments(
            row["id"], 20, 0)
        holds = await console.service("accounts", request, session).account_holds(row["id"])
        details = [(k, shown(val)) for k, val in sorted(row.items())
                   if not k.endswith("_hash")]
        return {"template": "account.html", "payments": payments, "details": details,
                "holds": holds, "xdrs": await screens_calls.account_xdrs(console, row["id"]),
                "pay_fields": PAYMENT_FIELDS, "pay_values": {"kind": "payment"},
                "pay_errors": {}}

    accounts = Screen(
        "accounts", "Accounts", "account", key=lambda r: r["id"],
        columns=[("Account ID", lambda r: r["id"]), ("Customer", lambda r: r.get("customer", "")),
                 ("Product", lambda r: r.get("product", "")), ("Status", lambda r: r["status"]),
                 ("Balance", lambda r: shown(r.get("balance")))],
        fields=ACCOUNT_FIELDS, service="accounts", ops=_ops("account"),
        prepare=_drop_empty_passwords, search="id_prefix",
        search_label="Account ID starts with",
        filters=("customer", "product", "batch", "status"), extra_fn=account_extra,
        defaults={"account_type": "debit", "status": "active", "opening_balance": "0"})

    async def batch_extra(console, request, session, row, values):
        """A batch's account counts and generator runs, and its Activate button."""
        return {"template": "batch.html"} if row else {}

    batches = Screen(
        "batches", "Batches", "batch", key=lambda r: str(r["id"]),
        columns=[("Name", lambda r: r["name"]), ("Customer", lambda r: str(r["customer_id"]))],
        fields=BATCH_FIELDS, service="accounts",
        ops={k: v for k, v in _ops("batch", "batches").items() if k != "update"}, search="name",
        search_label="Name", extra_fn=batch_extra)

    for screen in (customers, accounts, batches):
        screen.register(console)
    _payment_routes(console, accounts)
    _batch_routes(console, batches)
    _generator_routes(console)


def _payment_routes(console, accounts: Screen) -> None:
    """Recharge or refund an account from its page."""
    async def recharge(request, session, key):
        """Record the payment or refund; the account's page again (with the errors)."""
        values = form_fields(request)
        try:
            await console.service("payments", request, session).recharge_account(
                key, form_data(PAYMENT_FIELDS, values, partial=False),
                made_by=f"console:{console.actor(session)}")
        except (ValidationError, ConflictError) as e:
            row = await console.service("accounts", request, session).get_account(key)
            extra = await accounts.extra_fn(console, request, session, row, None)
            extra.update(pay_values=values, pay_errors=field_errors(e))
            extra.pop("template")
            return console.render(request, session, "account.html",
                                  409 if isinstance(e, ConflictError) else 400,
                                  active="accounts", screen=accounts, row=row,
                                  fields=list(accounts.fields),
                                  values={f.name: shown(row.get(f.name)) for f in accounts.fields},
                                  errors={}, extra=extra, title=f"Account {row['id']}")
        return console._redirect(request, accounts.link({"id": key}) + "#payments")

    console.app.route("/accounts/<key>/payments", methods=["POST"], endpoint="account_pay")(
        console.page()(recharge))


def _batch_routes(console, batches: Screen) -> None:
    """Activate every inactive account of a batch."""

    async def activate(request, session, key):
        """Activate, then the batch's page."""
        count = await console.service("accounts", request, session).activate_batch(key)
        console.log.info("console activate batch {batch} accounts={count} by={actor}",
                         batch=key, count=count, actor=console.actor(session))
        return console._redirect(request, url(f"/batches/{quote(key, safe='')}", activated=count))

    console.app.route("/batches/<key>/activate", methods=["POST"], endpoint="batch_activate")(
        console.page()(activate))


def _generator_routes(console) -> None:
    """The generator's form, its job's progress and the CSV of the batch it made."""
    route, page = console.app.route, console.page
    jobs = console.admin.jobs  # shared with the admin API's /v1/generator/jobs

    def form(request, session, status, values, errors):
        return console.render(request, session, "generator.html", status, active="generator",
                              fields=GENERATOR_FIELDS, values=values, errors=errors,
                              title="Account generator")

    async def show_form(request, session):
        """The generator's form."""
        return form(request, session, 200, {"quantity": "10", "length": "10", "prefix": "cb",
                                            "new_batch": "true", "opening_balance": "0",
                                            "service_password": "auto",
                                            "web_credentials": "auto"}, {})

    async def start(request, session):
        """Check the request at once (errors beside the fields), then run it as a job."""
        values = form_fields(request)
        data = form_data(GENERATOR_FIELDS, values, partial=False)
        try:
            await console.service("generator", request, session).check(data)
        except (ValidationError, ConflictError, NotFound) as e:
            return form(request, session, 409 if isinstance(e, ConflictError) else 400, values,
                        field_errors(e))
        job = start_job(console, console.service("generator", request, session), jobs, data,
                        console.actor(session))
        return console._redirect(request, url(f"/generator/jobs/{job['id']}"))

    def get_job(job_id):
        if job_id not in jobs:
            raise NotFound("generator job", job_id)
        return jobs[job_id]

    async def progress(request, session, job_id):
        """The job's page (the whole page, or only the progress for htmx)."""
        job = get_job(job_id)
        fragment = request.getHeader(b"hx-request") == b"true"
        return console.render(request, session, "job_fragment.html" if fragment else "job.html",
                              active="generator", job=job, title="Generating accounts")

    async def download(request, session, job_id):
        """The CSV the job wrote (only a file inside the generator's CSV folder).

        It holds the accounts' passwords: administrators only, like the generator itself.
        """
        if not session.can_change:
            raise Refused(403, "The batch's CSV holds the accounts' passwords: it is for "
                               "administrators.")
        job = get_job(job_id)
        if job["state"] != "done":
            raise Refused(409, "The batch is not finished yet.")
        folder = Path(console.generator.csv_dir).resolve()
        path = Path(job["result"]["csv_path"]).resolve()
        if folder not in path.parents or not path.is_file():
            raise NotFound("CSV file", path.name)
        request.setHeader(b"content-type", b"text/csv; charset=utf-8")
        request.setHeader(b"content-disposition",
                          f'attachment; filename="{path.name}"'.encode("ascii", "replace"))
        console.log.info("console download batch csv {name} by={actor}", name=path.name,
                         actor=console.actor(session))
        return path.read_bytes()

    route("/generator", methods=["GET"], endpoint="generator_form")(page()(show_form))
    route("/generator", methods=["POST"], endpoint="generator_start")(page()(start))
    route("/generator/jobs/<job_id>", methods=["GET"], endpoint="generator_job")(page()(progress))
    route("/generator/jobs/<job_id>/csv", methods=["GET"], endpoint="generator_csv")(
        page()(download))


def start_job(console, generator, jobs: dict, data: dict, actor: str) -> dict:
    """Run the generator in the background as a job of ``jobs`` (its progress kept there)."""
    finished_jobs = [k for k, j in jobs.items() if j["state"] != "running"]
    for old in finished_jobs[:max(0, len(finished_jobs) - MAX_FINISHED_JOBS + 1)]:
        del jobs[old]  # the memory of finished jobs stays bounded (oldest first)
    job = {"id": secrets.token_hex(8), "state": "running", "stage": "checking", "done": 0,
           "total": int(data.get("quantity") or 0), "by": actor}
    jobs[job["id"]] = job

    def progress(stage, done, total):
        job.update(stage=stage, done=done, total=total)

    def finished(result):
        job.update(state="done", result=result)
        console.log.info("console generated batch {batch} quantity={quantity} by={actor}",
                         batch=result.get("batch"), quantity=result.get("quantity"), actor=actor)

    def failed(f):
        err = f.value
        if isinstance(err, ValidationError | ConflictError | NotFound | DatabaseUnavailable):
            job.update(state="failed", error={"field": getattr(err, "field", None),
                                              "message": str(err)})
        else:
            job.update(state="failed", error={"field": None, "message": "internal error"})
            console.log.failure("generator job {job} failed", failure=f, job=job["id"])

    d = defer.ensureDeferred(generator.generate(data, progress=progress))
    d.addCallbacks(finished, failed)
    return job
