-- 021: secrets the web layer signs with (CSRF tokens, Hosted-token cookies), shared by every
-- node so that a form served by one node can be posted to another behind a load balancer.
-- The first node to start creates the secret; the others read it.

CREATE TABLE web_secrets (
    name        text        PRIMARY KEY,
    secret      bytea       NOT NULL CHECK (length(secret) >= 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE web_secrets IS 'Signing keys of the web pages, shared by all nodes';
