-- Issue 5: dead-letter lookups by type and resumable backfills from Stripe's events API.

CREATE INDEX webhook_events_dead ON webhook_events (type, received_at) WHERE status = 'dead';

CREATE TABLE backfill_runs (
    run_id        bigserial PRIMARY KEY,
    since         timestamptz NOT NULL,          -- events created at or after this
    cursor        text,                          -- last event id read (Stripe lists newest first)
    status        text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
    seen          integer NOT NULL DEFAULT 0,
    inserted      integer NOT NULL DEFAULT 0,
    last_error    text,
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
