-- The period-end sweep reads only active changes, in (fire_at, change_id) keyset order: an index
-- of just those rows keeps it off the history and off a sort, however many are due at once.
CREATE INDEX plan_changes_active_order ON plan_changes (fire_at, change_id)
    WHERE status IN ('pending', 'waiting_payment', 'firing');
