-- Workspace billing state, its observations, the webhook inbox and the audit log.

CREATE TABLE workspaces (
    workspace_id         text PRIMARY KEY,
    customer_id          text,
    plan                 text NOT NULL,
    interval             text,
    seats                integer NOT NULL,
    status               text NOT NULL,
    subscription_id      text,
    trial_end            timestamptz,
    period_start         timestamptz,
    period_end           timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    custom_contract      boolean NOT NULL DEFAULT false,
    storage_addon_units  integer NOT NULL DEFAULT 0,
    storage_quota_bytes  bigint NOT NULL,
    blocked              boolean NOT NULL DEFAULT false,
    dunning_level        text,
    view                 jsonb NOT NULL,          -- the whole derived WorkspaceView
    version              bigint NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workspaces_blocked ON workspaces (workspace_id) WHERE blocked;

-- Stripe customer -> workspace, remembered once seen (SPEC §3).
CREATE TABLE customers (
    customer_id  text PRIMARY KEY,
    workspace_id text NOT NULL REFERENCES workspaces (workspace_id),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Latest observation of each subscription (latest event ``created`` wins).
CREATE TABLE subscriptions (
    subscription_id   text PRIMARY KEY,
    workspace_id      text NOT NULL REFERENCES workspaces (workspace_id),
    customer_id       text NOT NULL,
    status            text NOT NULL,
    snapshot          jsonb NOT NULL,
    observed_at       timestamptz NOT NULL,
    observed_event_id text NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_workspace ON subscriptions (workspace_id);

-- Latest observation of each invoice (status only moves forward).
CREATE TABLE invoices (
    invoice_id           text PRIMARY KEY,
    workspace_id         text NOT NULL REFERENCES workspaces (workspace_id),
    customer_id          text NOT NULL,
    subscription_id      text,
    status               text NOT NULL,
    currency             text NOT NULL,
    amount_due           bigint NOT NULL,
    amount_paid          bigint NOT NULL,
    amount_remaining     bigint NOT NULL,
    attempt_count        integer NOT NULL,
    next_payment_attempt timestamptz,
    billing_reason       text,
    invoice_created      timestamptz NOT NULL,
    first_failed_at      timestamptz,
    last_failed_at       timestamptz,
    snapshot             jsonb NOT NULL,
    observed_at          timestamptz NOT NULL,
    observed_event_id    text NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoices_unpaid ON invoices (workspace_id) WHERE status IN ('open', 'uncollectible');
CREATE INDEX invoices_workspace ON invoices (workspace_id, invoice_created DESC);

-- The webhook inbox: every verified event, kept with the exact bytes Stripe signed.
CREATE TABLE webhook_events (
    event_id      text PRIMARY KEY,
    type          text NOT NULL,
    api_version   text,
    created       timestamptz NOT NULL,           -- event.created (Stripe's clock)
    livemode      boolean NOT NULL DEFAULT false,
    payload       text NOT NULL,
    status        text NOT NULL DEFAULT 'received'
                  CHECK (status IN ('received', 'processed', 'ignored', 'unmatched', 'failed', 'dead')),
    outcome       text,                           -- applied | stale | ignored | …
    workspace_id  text,
    customer_id   text,
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    received_at   timestamptz NOT NULL DEFAULT now(),
    processed_at  timestamptz,
    next_retry_at timestamptz
);
CREATE INDEX webhook_events_open ON webhook_events (status, received_at)
    WHERE status IN ('received', 'unmatched', 'failed');
CREATE INDEX webhook_events_unmatched_customer ON webhook_events (customer_id)
    WHERE status = 'unmatched';
CREATE INDEX webhook_events_workspace ON webhook_events (workspace_id, created);

-- Append-only audit of every state transition.
CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    workspace_id text NOT NULL REFERENCES workspaces (workspace_id),
    version      bigint NOT NULL,
    cause_kind   text NOT NULL CHECK (cause_kind IN ('event', 'request', 'sweep', 'job')),
    cause_id     text NOT NULL,
    changes      jsonb NOT NULL,
    before       jsonb NOT NULL,
    after        jsonb NOT NULL,
    effective_at timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, version)
);
-- One transition per event per workspace, whatever retries or replays happen.
CREATE UNIQUE INDEX audit_log_one_per_event ON audit_log (workspace_id, cause_id)
    WHERE cause_kind = 'event';

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
