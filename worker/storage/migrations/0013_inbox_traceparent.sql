-- The W3C traceparent of the webhook request that stored the event (tracing on), so that the
-- worker's span continues the receiver's trace: the queue carries only event ids. NULL when
-- tracing was off. Nullable and without a default: adding it rewrites nothing.
ALTER TABLE webhook_events ADD COLUMN traceparent text;
