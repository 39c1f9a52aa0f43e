-- rowcast schema, PostgreSQL dialect: the same model as migrations/sqlite, plus the
-- tables of cluster presence. Times are timestamptz; clients see them as ISO-8601 UTC
-- text with milliseconds (rowcast_iso), exactly as in SQLite mode.

-- 2026-11-28T08:15:00.123Z
CREATE FUNCTION rowcast_iso(t timestamptz) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;

CREATE TABLE users (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    avatar_url  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rooms (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    last_seq    bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50); -- last_seq changes with every write: room for HOT updates

CREATE TABLE memberships (
    room_id     text NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id     text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('owner', 'editor', 'member', 'viewer')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_user ON memberships(user_id);

-- seq is gapless per room and follows commit order within the room. ids come from a
-- sequence: they grow, but concurrent writers commit them out of order, so rows are read
-- by (room_id, seq), never by "id above the last one seen". inserted_at is set by the
-- trigger below when the INSERT does not give one.
CREATE TABLE messages (
    id          bigserial PRIMARY KEY,
    room_id     text NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    user_id     text NOT NULL,
    body        text NOT NULL,
    inserted_at timestamptz NOT NULL,
    CONSTRAINT messages_room_seq UNIQUE (room_id, seq)
);

-- Per-room counters (messages.seq here, document_ops.seq in 0002) are assigned by
-- BEFORE INSERT triggers, so a plain INSERT from any client gets one. The first row a
-- transaction inserts into a room takes the room's row lock and reads rooms.last_seq;
-- the lock is held to the end of the transaction, so writers of one room take turns and
-- commit order equals seq order within a room. The transaction's later rows for that
-- room count on from a transaction-local setting instead of updating the room row each
-- time (N updates of one row in one transaction cost O(N^2): an INSERT ... SELECT of
-- 10,000 rows took 6.7 s that way), and the room row gets its final count at commit,
-- from a deferred trigger. Inside the inserting transaction, rooms.last_seq therefore
-- lags until commit; everyone else sees it move with the rows.
--
-- The counts live in 1024 settings per counter (rowcast.m0 .. rowcast.m1023, chosen by
-- a hash of the room id; a fixed set, so a long session does not collect one setting per
-- room it ever wrote to), each holding "<seq> <seq written to the room row> <room id>".
-- A room that takes over a slot first writes the previous room's count to its row.
-- Settings follow savepoints: a rolled-back insert gives its seq back.
--
-- An INSERT may give the seq itself, but only the one it would get. inserted_at, unless
-- given, is read once the room's lock is held, so it does not decrease along a room's
-- seqs either.
CREATE FUNCTION rowcast_messages_seq() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    slot text := 'rowcast.m' || (hashtext(NEW.room_id) & 1023)::text;
    v text := current_setting(slot, true);
    s bigint;    -- the slot's count
    w bigint;    -- the count its room's row holds
    r text;      -- the slot's room
BEGIN
    IF v <> '' THEN
        s := split_part(v, ' ', 1)::bigint;
        w := split_part(v, ' ', 2)::bigint;
        r := substr(v, length(split_part(v, ' ', 1)) + length(split_part(v, ' ', 2)) + 3);
    END IF;
    IF r IS DISTINCT FROM NEW.room_id THEN
        IF r IS NOT NULL AND s <> w THEN
            UPDATE rooms SET last_seq = s WHERE id = r;
        END IF;
        SELECT last_seq INTO s FROM rooms WHERE id = NEW.room_id FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'rowcast: no such room %', NEW.room_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        w := s;
    END IF;
    s := s + 1;
    IF NEW.seq IS NOT NULL AND NEW.seq <> s THEN
        RAISE EXCEPTION 'rowcast: seq must be the room''s last_seq + 1 (%)', s
            USING ERRCODE = 'check_violation';
    END IF;
    PERFORM set_config(slot, s || ' ' || w || ' ' || NEW.room_id, true);
    NEW.seq := s;
    NEW.inserted_at := COALESCE(NEW.inserted_at, clock_timestamp());
    RETURN NEW;
END $$;

CREATE TRIGGER messages_seq BEFORE INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION rowcast_messages_seq();

-- At commit (or SET CONSTRAINTS ... IMMEDIATE): the room row gets the count.
CREATE FUNCTION rowcast_messages_seq_write() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    slot text := 'rowcast.m' || (hashtext(NEW.room_id) & 1023)::text;
    v text := current_setting(slot, true);
    s text;
    w text;
BEGIN
    IF v <> '' THEN
        s := split_part(v, ' ', 1);
        w := split_part(v, ' ', 2);
        IF s <> w AND substr(v, length(s) + length(w) + 3) = NEW.room_id THEN
            UPDATE rooms SET last_seq = s::bigint WHERE id = NEW.room_id;
            PERFORM set_config(slot, s || ' ' || s || ' ' || NEW.room_id, true);
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER messages_seq_write AFTER INSERT ON messages
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION rowcast_messages_seq_write();

-- A room deleted (and maybe created again) in the transaction starts over.
CREATE FUNCTION rowcast_rooms_forget_seq() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    slot text := 'rowcast.m' || (hashtext(OLD.id) & 1023)::text;
    v text := current_setting(slot, true);
BEGIN
    IF v <> '' AND substr(v, length(split_part(v, ' ', 1)) + length(split_part(v, ' ', 2)) + 3)
                   = OLD.id THEN
        PERFORM set_config(slot, '', true);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER rooms_forget_seq AFTER DELETE ON rooms
    FOR EACH ROW EXECUTE FUNCTION rowcast_rooms_forget_seq();

-- A node delivers a user's notifications by id, so ids must grow per user in commit
-- order: the id is taken from the sequence only after a transaction-scoped advisory lock
-- on the user's bucket (one of 256, by a hash of user_id: a fixed set, so a transaction
-- never holds more than 256 of them), held to commit. Writers of one user (bucket) take
-- turns; an INSERT that gives its own id gets no such guarantee.
CREATE SEQUENCE notifications_id_seq;

CREATE TABLE notifications (
    id          bigint PRIMARY KEY,
    user_id     text NOT NULL,
    payload     jsonb NOT NULL DEFAULT '{}',
    inserted_at timestamptz NOT NULL,
    read_at     timestamptz
);
ALTER SEQUENCE notifications_id_seq OWNED BY notifications.id;
CREATE INDEX notifications_user ON notifications(user_id, id);

-- Takes the bucket locks of several users in one global order (rowcast takes them this
-- way before a batch, so two nodes never wait for each other in a cycle).
CREATE FUNCTION rowcast_lock_notification_users(users text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    b int;
BEGIN
    FOR b IN SELECT DISTINCT hashtext(u) & 255 FROM unnest(users) u ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(1380142676, b);
    END LOOP;
END $$;

CREATE FUNCTION rowcast_notifications_id() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1380142676, hashtext(NEW.user_id) & 255);
    IF NEW.id IS NULL THEN
        NEW.id := nextval('notifications_id_seq');
    END IF;
    NEW.inserted_at := COALESCE(NEW.inserted_at, clock_timestamp());
    RETURN NEW;
END $$;

CREATE TRIGGER notifications_id BEFORE INSERT ON notifications
    FOR EACH ROW EXECUTE FUNCTION rowcast_notifications_id();

-- Cluster presence: each node heartbeats its row; a node whose heartbeat is stale is
-- reaped (its presences go with it) by any live node, which broadcasts the leaves.
CREATE TABLE nodes (
    id           text PRIMARY KEY,
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE presences (
    node_id     text NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    topic       text NOT NULL,
    key         text NOT NULL,
    conn_id     bigint NOT NULL,
    meta        jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (node_id, topic, conn_id)
);
CREATE INDEX presences_topic ON presences(topic);
