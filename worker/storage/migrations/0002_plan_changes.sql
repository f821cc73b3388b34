-- Plan changes: the workspace's single active (pending / waiting for payment / firing) change,
-- and every past one (applied, failed, superseded, canceled) for the record.

CREATE TABLE plan_changes (
    change_id          text PRIMARY KEY,               -- pc_<hex>
    workspace_id       text NOT NULL REFERENCES workspaces (workspace_id),
    kind               text NOT NULL CHECK (kind IN ('immediate', 'at_period_end')),
    status             text NOT NULL CHECK (status IN ('pending', 'waiting_payment', 'firing',
                                                       'applied', 'failed', 'superseded', 'canceled')),
    from_plan          text NOT NULL,
    from_interval      text,
    from_seats         integer NOT NULL,
    to_plan            text NOT NULL,
    to_interval        text,
    to_seats           integer NOT NULL,
    request            jsonb NOT NULL,                 -- the validated ChangeRequest
    decision           jsonb NOT NULL,                 -- the policy Decision when it was requested
    effective_at       timestamptz NOT NULL,
    fire_at            timestamptz NOT NULL,           -- effective_at minus the policy's lead
    subscription_id    text,
    idempotency_key    text NOT NULL UNIQUE,           -- plan-change:<change_id>, on every attempt
    stripe_params      jsonb,                          -- fixed at the first claim, resent verbatim
    attempts           integer NOT NULL DEFAULT 0,
    claimed_at         timestamptz,                    -- a live firing claim; NULL: free to claim
    last_error         text,
    request_id         text NOT NULL,                  -- the API request that created it
    superseded_by      text REFERENCES plan_changes (change_id),
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    applied_at         timestamptz,
    confirmed_event_id text,                           -- the Stripe webhook caused by our call
    confirmed_at       timestamptz                     -- that event's ``created``
);
-- One active change per workspace: a newer request supersedes the pending one.
CREATE UNIQUE INDEX plan_changes_one_active ON plan_changes (workspace_id)
    WHERE status IN ('pending', 'waiting_payment', 'firing');
CREATE INDEX plan_changes_due ON plan_changes (fire_at)
    WHERE status IN ('pending', 'waiting_payment', 'firing');
CREATE INDEX plan_changes_workspace ON plan_changes (workspace_id, created_at DESC);
