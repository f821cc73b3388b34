-- Issue 17: the support desk's timeline and event browser, and each plan change's life.
-- Every page of GET /v1/workspaces/{id}/timeline and GET /v1/events is one statement whose parts
-- are index scans in keyset order (time, id): these indexes make that so.

-- A workspace's transitions in (effective_at, version) order.
CREATE INDEX audit_log_timeline ON audit_log (workspace_id, effective_at, version);

-- A workspace's inbox events in (created, event_id) order; replaces (workspace_id, created).
CREATE INDEX webhook_events_workspace_created ON webhook_events (workspace_id, created, event_id);
DROP INDEX webhook_events_workspace;
-- The event browser without a workspace filter.
CREATE INDEX webhook_events_created ON webhook_events (created, event_id);

-- A workspace's plan changes in (created_at, change_id) order; replaces (workspace_id, created_at DESC).
CREATE INDEX plan_changes_workspace_created ON plan_changes (workspace_id, created_at, change_id);
DROP INDEX plan_changes_workspace;

-- A workspace's AI-credit entries in (recorded_at, id) order.
CREATE INDEX ai_credit_ledger_timeline ON ai_credit_ledger (workspace_id, recorded_at, id);

-- Each plan change's life: [{"status", "at"}, …], from "requested" on, appended by every status
-- change. Rows written before this migration get what their columns still tell.
ALTER TABLE plan_changes ADD COLUMN history jsonb NOT NULL DEFAULT '[]';
UPDATE plan_changes SET history = jsonb_build_array(
    jsonb_build_object('status', 'requested',
                       'at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
    jsonb_build_object('status', status,
                       'at', to_char(COALESCE(applied_at, updated_at) AT TIME ZONE 'UTC',
                                     'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')));
