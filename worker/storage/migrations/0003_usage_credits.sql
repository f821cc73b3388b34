-- Usage reported by the product, the AI-credit ledger, and the dunning sweep's index.

ALTER TABLE workspaces
    ADD COLUMN members            integer CHECK (members >= 0),
    ADD COLUMN storage_used_bytes bigint  CHECK (storage_used_bytes >= 0),
    -- Kept equal to SUM(ai_credit_ledger.amount) by the trigger below, in the inserting
    -- transaction; the CHECK makes "never below zero" a database guarantee too.
    ADD COLUMN ai_credit_balance  bigint NOT NULL DEFAULT 0 CHECK (ai_credit_balance >= 0);

-- Append-only: grants are positive, consumption negative; a source key is granted once, ever.
CREATE TABLE ai_credit_ledger (
    id            bigserial PRIMARY KEY,
    workspace_id  text NOT NULL REFERENCES workspaces (workspace_id),
    source_key    text NOT NULL UNIQUE,
    kind          text NOT NULL CHECK (kind IN ('pack', 'cycle', 'consume')),
    amount        bigint NOT NULL CHECK (amount <> 0),
    balance_after bigint NOT NULL CHECK (balance_after >= 0),
    reference     text NOT NULL,
    reason        text,
    cause_kind    text NOT NULL CHECK (cause_kind IN ('event', 'request', 'sweep', 'job')),
    cause_id      text NOT NULL,
    recorded_at   timestamptz NOT NULL
);
CREATE INDEX ai_credit_ledger_workspace ON ai_credit_ledger (workspace_id, id DESC);

CREATE FUNCTION ai_credit_ledger_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE workspaces SET ai_credit_balance = ai_credit_balance + NEW.amount
     WHERE workspace_id = NEW.workspace_id
    RETURNING ai_credit_balance INTO NEW.balance_after;
    RETURN NEW;
END $$;
CREATE TRIGGER ai_credit_ledger_balance BEFORE INSERT ON ai_credit_ledger
    FOR EACH ROW EXECUTE FUNCTION ai_credit_ledger_apply();

CREATE FUNCTION ai_credit_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ai_credit_ledger is append-only';
END $$;
CREATE TRIGGER ai_credit_ledger_no_update BEFORE UPDATE OR DELETE ON ai_credit_ledger
    FOR EACH ROW EXECUTE FUNCTION ai_credit_ledger_append_only();
