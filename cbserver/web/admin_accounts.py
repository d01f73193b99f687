"""The admin API's batches, accounts (with their payments) and generator jobs: ``/v1/batches``,
``/v1/accounts``, ``/v1/generator/jobs``.

``install(AdminApp, api)`` adds these routes to the admin app (``cbserver.web.admin`` calls it
once; this module does not import that one, so there is no cycle): same bearer token, same
error envelope and boundary. Each route only parses the request and calls the ``Accounts``,
``Payments`` and ``Generator`` services, as the CLI does. A generator request is checked at
once (400/409) and then runs as a background job the client polls.
"""

from __future__ import annotations

import secrets

from twisted.internet import defer

from cbserver.billing.validation import ConflictError, NotFound, ValidationError
from cbserver.errors import DatabaseUnavailable

#: Finished generator jobs remembered for ``GET /v1/generator/jobs/<id>`` (oldest dropped).
MAX_FINISHED_JOBS = 100


def install(app_cls, api) -> None:
    """Add the batch, account and generator routes to ``app_cls.app`` (``AdminApp``), each
    wrapped by ``api``."""
    app = app_cls.app

    @app.route("/v1/batches", methods=["GET"])
    @api()
    async def list_batches(self, request):
        """List batches (filters: name, customer_id)."""
        return await self.accounts.list_batches(*self._page(request))

    @app.route("/v1/batches", methods=["POST"])
    @api(201, body=True)
    async def create_batch(self, request, data):
        """Create an empty batch."""
        return await self.accounts.create_batch(data)

    @app.route("/v1/batches/<key>", methods=["GET"])
    @api()
    async def get_batch(self, request, key):
        """One batch with its account counts and generator runs."""
        return await self.accounts.get_batch(key)

    @app.route("/v1/batches/<key>", methods=["DELETE"])
    @api(204)
    async def delete_batch(self, request, key):
        """Delete an empty batch."""
        await self.accounts.delete_batch(key)

    @app.route("/v1/batches/<key>/activate", methods=["POST"])
    @api()
    async def activate_batch(self, request, key):
        """Activate every inactive account of the batch."""
        return {"activated": await self.accounts.activate_batch(key)}

    @app.route("/v1/accounts", methods=["GET"])
    @api()
    async def list_accounts(self, request):
        """List accounts (filters: customer, product, batch, status, account_type, internal, id_prefix)."""
        return await self.accounts.list_accounts(*self._page(request))

    @app.route("/v1/accounts", methods=["POST"])
    @api(201, body=True)
    async def create_account(self, request, data):
        """Create an account with a given ID."""
        return await self.accounts.create_account(data)

    @app.route("/v1/accounts/<account_id>", methods=["GET"])
    @api()
    async def get_account(self, request, account_id):
        """One account (never its password hashes)."""
        return await self.accounts.get_account(account_id)

    @app.route("/v1/accounts/<account_id>", methods=["PATCH"])
    @api(body=True)
    async def update_account(self, request, data, account_id):
        """Change an account."""
        return await self.accounts.update_account(account_id, data)

    @app.route("/v1/accounts/<account_id>", methods=["DELETE"])
    @api(204)
    async def delete_account(self, request, account_id):
        """Delete an account nothing refers to."""
        await self.accounts.delete_account(account_id)

    @app.route("/v1/accounts/<account_id>/activate", methods=["POST"])
    @api()
    async def activate_account(self, request, account_id):
        """Activate one account."""
        return {"activated": await self.accounts.activate_account(account_id)}

    @app.route("/v1/accounts/<account_id>/payments", methods=["GET"])
    @api()
    async def list_account_payments(self, request, account_id):
        """List an account's payments (recharges) and refunds, newest first."""
        _filters, limit, offset = self._page(request)
        return await self.payments.list_account_payments(account_id, limit, offset)

    @app.route("/v1/accounts/<account_id>/payments", methods=["POST"])
    @api(201, body=True)
    async def recharge_account(self, request, data, account_id):
        """Recharge (or refund) an individual account; the row carries the new balance."""
        return await self.payments.recharge_account(account_id, data, made_by="admin-api")

    @app.route("/v1/generator/jobs", methods=["POST"])
    @api(202, body=True)
    async def start_generator(self, request, data):
        """Check a generator request (400/409 at once) and run it as a background job."""
        await self.generator.check(data)
        finished_jobs = [k for k, j in self.jobs.items() if j["state"] != "running"]
        for old in finished_jobs[:max(0, len(finished_jobs) - MAX_FINISHED_JOBS + 1)]:
            del self.jobs[old]  # keep the memory of finished jobs bounded (oldest first)
        job_id = secrets.token_hex(8)
        job = {"id": job_id, "state": "running", "stage": "checking", "done": 0, "total": 0}
        self.jobs[job_id] = job

        def progress(stage, done, total):
            job.update(stage=stage, done=done, total=total)

        def finished(result):
            job.update(state="done", result=result)

        def failed(f):
            err = f.value
            if isinstance(err, ValidationError | ConflictError | NotFound | DatabaseUnavailable):
                job.update(state="failed", error={"field": getattr(err, "field", None), "message": str(err)})
            else:
                job.update(state="failed", error={"field": None, "message": "internal error"})
                self.log.failure("generator job {job} failed", failure=f, job=job_id)

        d = defer.ensureDeferred(self.generator.generate(data, progress=progress))
        d.addCallbacks(finished, failed)
        request.setHeader(b"location", f"/v1/generator/jobs/{job_id}".encode())
        return job

    @app.route("/v1/generator/jobs/<job_id>", methods=["GET"])
    @api()
    async def get_generator_job(self, request, job_id):
        """A generator job: state (running/done/failed), progress, result (CSV path) or error."""
        if job_id not in self.jobs:
            raise NotFound("generator job", job_id)
        return self.jobs[job_id]
