-- rowcast: the functions and triggers that make row writes reach subscribers.
-- Installed by `rowcast migrate` as migration 0003_notify (sql/notify.sql is a link to
-- it, for operators). Idempotent: operators may run it again with psql -f.
--
-- NOTIFY is a wake-up, not the message: every payload on channel 'rowcast' names a topic,
-- and a woken node reads the new rows by seq. PostgreSQL folds identical payloads sent in
-- one transaction into one, so a transaction inserting 100 messages into a room sends one
-- 'room:<id>'. Ephemeral broadcasts (no row) travel in the payload itself ('b:' + JSON
-- text) when small, else as a row of broadcasts ('B:' + its id).

CREATE OR REPLACE FUNCTION rowcast_notify_message() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rowcast', 'room:' || NEW.room_id);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION rowcast_notify_notification() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rowcast', 'notifications:' || NEW.user_id);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION rowcast_notify_document_op() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rowcast', 'document:' || NEW.room_id);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS messages_notify ON messages;
CREATE TRIGGER messages_notify AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION rowcast_notify_message();

DROP TRIGGER IF EXISTS notifications_notify ON notifications;
CREATE TRIGGER notifications_notify AFTER INSERT ON notifications
    FOR EACH ROW EXECUTE FUNCTION rowcast_notify_notification();

DROP TRIGGER IF EXISTS document_ops_notify ON document_ops;
CREATE TRIGGER document_ops_notify AFTER INSERT ON document_ops
    FOR EACH ROW EXECUTE FUNCTION rowcast_notify_document_op();

-- Broadcasts too large for a NOTIFY payload (8000 bytes). Nodes read the row named by
-- the 'B:<id>' wake-up; rowcast_broadcast deletes rows older than ten minutes.
CREATE TABLE IF NOT EXISTS broadcasts (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL,
    event       text NOT NULL,
    payload     jsonb,
    inserted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS broadcasts_inserted_at ON broadcasts(inserted_at);

-- SELECT rowcast_broadcast('prices:updates', 'price_change', '{"btc":50000}');
-- Sends event with payload to every subscriber of topic on every node, without storing
-- it (unless it is large). Transactional like NOTIFY: sent at commit, not at all on
-- rollback; two identical broadcasts in one transaction fold into one.
CREATE OR REPLACE FUNCTION rowcast_broadcast(topic text, event text, payload jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    msg text := jsonb_build_object('t', topic, 'e', event, 'p', payload)::text;
    big_id bigint;
BEGIN
    IF topic IS NULL OR event IS NULL THEN
        RAISE EXCEPTION 'rowcast_broadcast: topic and event must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF octet_length(msg) < 7900 THEN
        PERFORM pg_notify('rowcast', 'b:' || msg);
    ELSE
        DELETE FROM broadcasts WHERE inserted_at < now() - interval '10 minutes';
        INSERT INTO broadcasts(topic, event, payload)
            VALUES (rowcast_broadcast.topic, rowcast_broadcast.event, rowcast_broadcast.payload)
            RETURNING id INTO big_id;
        PERFORM pg_notify('rowcast', 'B:' || big_id);
    END IF;
END $$;
