-- The life of a message: edits, deletes, reactions, replies and read cursors, each a
-- durable change with the room's next version.
--
-- room_changes is the log: one row per change, numbered by rooms.version (gapless per
-- room, separate from message seq), holding the event and the payload that is broadcast,
-- so a client that was away replays what it missed by version. The triggers below write
-- every row of it, so rowcast's own writes and an INSERT, UPDATE or DELETE from psql or
-- any other client take the same path, and the NOTIFY 'room:<id>' that wakes the nodes
-- now comes from the log instead of from messages. Nodes read the log by
-- (room_id, version), as they read messages by (room_id, seq) before.

ALTER TABLE rooms ADD COLUMN version bigint NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN reply_to bigint;
ALTER TABLE messages ADD COLUMN edited_at timestamptz;
ALTER TABLE messages ADD COLUMN deleted_at timestamptz;
ALTER TABLE memberships ADD COLUMN last_read_seq bigint NOT NULL DEFAULT 0;

CREATE INDEX messages_replies ON messages(room_id, reply_to, seq) WHERE reply_to IS NOT NULL;

CREATE TABLE reactions (
    room_id     text NOT NULL,
    seq         bigint NOT NULL,
    emoji       text NOT NULL,
    user_id     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, seq, emoji, user_id)
);

CREATE TABLE room_changes (
    id          bigserial PRIMARY KEY,
    room_id     text NOT NULL,
    version     bigint NOT NULL,
    seq         bigint NOT NULL,    -- the message the change is about
    user_id     text NOT NULL,      -- that message's author
    event       text NOT NULL,
    payload     jsonb NOT NULL,     -- as broadcast; "version" is added by the trigger
    inserted_at timestamptz NOT NULL,
    CONSTRAINT room_changes_room_version UNIQUE (room_id, version)
);
CREATE INDEX room_changes_room_seq ON room_changes(room_id, seq);

-- The version is counted as rowcast_messages_seq (0001) counts seqs, in settings
-- rowcast.v<n>: the first change a transaction makes in a room takes the room's row lock
-- and reads rooms.version, later ones count on in the setting, and the room row gets the
-- final count at commit. Commit order therefore equals version order within a room.
CREATE FUNCTION rowcast_room_changes_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    slot text := 'rowcast.v' || (hashtext(NEW.room_id) & 1023)::text;
    v text := current_setting(slot, true);
    s bigint;
    w bigint;
    r text;
BEGIN
    IF v <> '' THEN
        s := split_part(v, ' ', 1)::bigint;
        w := split_part(v, ' ', 2)::bigint;
        r := substr(v, length(split_part(v, ' ', 1)) + length(split_part(v, ' ', 2)) + 3);
    END IF;
    IF r IS DISTINCT FROM NEW.room_id THEN
        IF r IS NOT NULL AND s <> w THEN
            UPDATE rooms SET version = s WHERE id = r;
        END IF;
        SELECT version INTO s FROM rooms WHERE id = NEW.room_id FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'rowcast: no such room %', NEW.room_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        w := s;
    END IF;
    s := s + 1;
    PERFORM set_config(slot, s || ' ' || w || ' ' || NEW.room_id, true);
    NEW.version := s;
    NEW.payload := NEW.payload || jsonb_build_object('version', s);
    NEW.inserted_at := COALESCE(NEW.inserted_at, clock_timestamp());
    RETURN NEW;
END $$;

CREATE TRIGGER room_changes_version BEFORE INSERT ON room_changes
    FOR EACH ROW EXECUTE FUNCTION rowcast_room_changes_version();

CREATE FUNCTION rowcast_room_changes_version_write() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    slot text := 'rowcast.v' || (hashtext(NEW.room_id) & 1023)::text;
    v text := current_setting(slot, true);
    s text;
    w text;
BEGIN
    IF v <> '' THEN
        s := split_part(v, ' ', 1);
        w := split_part(v, ' ', 2);
        IF s <> w AND substr(v, length(s) + length(w) + 3) = NEW.room_id THEN
            UPDATE rooms SET version = s::bigint WHERE id = NEW.room_id;
            PERFORM set_config(slot, s || ' ' || s || ' ' || NEW.room_id, true);
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER room_changes_version_write AFTER INSERT ON room_changes
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION rowcast_room_changes_version_write();

-- A room deleted (and maybe created again) in the transaction counts from 0 again, and
-- its reactions and changes go with it.
CREATE FUNCTION rowcast_rooms_forget_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    slot text := 'rowcast.v' || (hashtext(OLD.id) & 1023)::text;
    v text := current_setting(slot, true);
BEGIN
    IF v <> '' AND substr(v, length(split_part(v, ' ', 1)) + length(split_part(v, ' ', 2)) + 3)
                   = OLD.id THEN
        PERFORM set_config(slot, '', true);
    END IF;
    DELETE FROM reactions WHERE room_id = OLD.id;
    DELETE FROM room_changes WHERE room_id = OLD.id;
    RETURN NULL;
END $$;

CREATE TRIGGER rooms_forget_version AFTER DELETE ON rooms
    FOR EACH ROW EXECUTE FUNCTION rowcast_rooms_forget_version();

DROP TRIGGER IF EXISTS messages_notify ON messages;
DROP TRIGGER IF EXISTS room_changes_notify ON room_changes;
CREATE TRIGGER room_changes_notify AFTER INSERT ON room_changes
    FOR EACH ROW EXECUTE FUNCTION rowcast_notify_message();

-- A reply names a message of the same room that is there and not deleted. (A room that
-- is not there is left to the seq trigger, which runs after this one: no such room.)
CREATE FUNCTION rowcast_messages_reply_to() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.reply_to IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM messages
         WHERE room_id = NEW.room_id AND seq = NEW.reply_to AND deleted_at IS NULL)
       AND EXISTS (SELECT 1 FROM rooms WHERE id = NEW.room_id) THEN
        RAISE EXCEPTION 'rowcast: invalid reply_to %', NEW.reply_to
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER messages_reply_to BEFORE INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION rowcast_messages_reply_to();

CREATE FUNCTION rowcast_messages_logged() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO room_changes(room_id, seq, user_id, event, payload)
    VALUES (NEW.room_id, NEW.seq, NEW.user_id, 'new_message',
            jsonb_build_object('body', NEW.body, 'id', NEW.id,
                               'inserted_at', rowcast_iso(NEW.inserted_at),
                               'reply_to', NEW.reply_to, 'seq', NEW.seq,
                               'user_id', NEW.user_id));
    RETURN NULL;
END $$;

CREATE TRIGGER messages_logged AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION rowcast_messages_logged();

-- Before an update: a new body marks an edit; setting deleted_at erases the body; a
-- deleted message stays erased, and un-deleting it is refused.
CREATE FUNCTION rowcast_messages_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.deleted_at IS NOT NULL THEN
        IF NEW.deleted_at IS DISTINCT FROM OLD.deleted_at THEN
            RAISE EXCEPTION 'rowcast: a deleted message stays deleted'
                USING ERRCODE = 'check_violation';
        END IF;
        NEW.body := '';
        NEW.edited_at := OLD.edited_at;
    ELSIF NEW.deleted_at IS NOT NULL THEN
        NEW.body := '';
    ELSIF NEW.body IS DISTINCT FROM OLD.body THEN
        NEW.edited_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER messages_update BEFORE UPDATE ON messages
    FOR EACH ROW EXECUTE FUNCTION rowcast_messages_update();

-- After an update: an edit or a delete is a change. A delete erases the body from the
-- earlier changes of that message too.
CREATE FUNCTION rowcast_messages_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN
        UPDATE room_changes SET payload = payload - 'body'
         WHERE room_id = NEW.room_id AND seq = NEW.seq
           AND event IN ('new_message', 'message_updated');
        INSERT INTO room_changes(room_id, seq, user_id, event, payload)
        VALUES (NEW.room_id, NEW.seq, NEW.user_id, 'message_deleted',
                jsonb_build_object('deleted_at', rowcast_iso(NEW.deleted_at), 'seq', NEW.seq));
    ELSIF OLD.deleted_at IS NULL AND NEW.body IS DISTINCT FROM OLD.body THEN
        INSERT INTO room_changes(room_id, seq, user_id, event, payload)
        VALUES (NEW.room_id, NEW.seq, NEW.user_id, 'message_updated',
                jsonb_build_object('body', NEW.body, 'edited_at', rowcast_iso(NEW.edited_at),
                                   'seq', NEW.seq, 'user_id', NEW.user_id));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER messages_changed AFTER UPDATE OF body, deleted_at ON messages
    FOR EACH ROW EXECUTE FUNCTION rowcast_messages_changed();

-- DELETE FROM messages while the room exists deletes the message as above (the tombstone
-- keeps its seq); deleting the room still removes its rows (0004).
CREATE FUNCTION rowcast_messages_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM rooms WHERE id = OLD.room_id) THEN
        UPDATE messages SET deleted_at = clock_timestamp()
         WHERE id = OLD.id AND deleted_at IS NULL;
        RETURN NULL;
    END IF;
    RETURN OLD;
END $$;

CREATE TRIGGER messages_delete BEFORE DELETE ON messages
    FOR EACH ROW EXECUTE FUNCTION rowcast_messages_delete();

CREATE FUNCTION rowcast_reactions_check() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM messages
                    WHERE room_id = NEW.room_id AND seq = NEW.seq AND deleted_at IS NULL) THEN
        RAISE EXCEPTION 'rowcast: no such message %', NEW.seq
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER reactions_check BEFORE INSERT ON reactions
    FOR EACH ROW EXECUTE FUNCTION rowcast_reactions_check();

-- A reaction added, or removed from a message that is still there, is a change.
CREATE FUNCTION rowcast_reactions_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    x reactions%ROWTYPE;
    author text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        x := NEW;
    ELSE
        x := OLD;
    END IF;
    SELECT user_id INTO author FROM messages
     WHERE room_id = x.room_id AND seq = x.seq AND deleted_at IS NULL;
    IF FOUND THEN
        INSERT INTO room_changes(room_id, seq, user_id, event, payload)
        VALUES (x.room_id, x.seq, author,
                CASE TG_OP WHEN 'INSERT' THEN 'reaction_added' ELSE 'reaction_removed' END,
                jsonb_build_object('emoji', x.emoji, 'seq', x.seq, 'user_id', x.user_id));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER reactions_changed AFTER INSERT OR DELETE ON reactions
    FOR EACH ROW EXECUTE FUNCTION rowcast_reactions_changed();
