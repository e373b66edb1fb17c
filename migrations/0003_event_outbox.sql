-- Events owed to the event sinks (--events-*) after their upload's record
-- is gone (post-terminate): the message is kept whole until delivered.
CREATE TABLE event_outbox (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    -- The message body (JSON text, published as is).
    body          TEXT NOT NULL,
    -- Until when one instance has claimed delivery.
    claimed_until TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX event_outbox_created_at ON event_outbox (created_at);
