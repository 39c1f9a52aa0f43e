-- Collaborative documents: document:<id> shares its id and memberships with room <id>.
-- Each edit is an operation in a per-document log with its own gapless seq, assigned
-- like message seqs (by the database, under the room's row lock, so any writer gets one).

ALTER TABLE rooms ADD COLUMN doc_last_seq bigint NOT NULL DEFAULT 0;

CREATE TABLE document_ops (
    id          bigserial PRIMARY KEY,
    room_id     text NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    user_id     text NOT NULL,
    operation   text NOT NULL,
    data        jsonb NOT NULL DEFAULT 'null',
    inserted_at timestamptz NOT NULL,
    CONSTRAINT document_ops_room_seq UNIQUE (room_id, seq)
);

-- The same counting as rowcast_messages_seq (0001), in settings rowcast.d<n>.
CREATE FUNCTION rowcast_document_ops_seq() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    slot text := 'rowcast.d' || (hashtext(NEW.room_id) & 1023)::text;
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
            UPDATE rooms SET doc_last_seq = s WHERE id = r;
        END IF;
        SELECT doc_last_seq INTO s FROM rooms WHERE id = NEW.room_id FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'rowcast: no such room %', NEW.room_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        w := s;
    END IF;
    s := s + 1;
    IF NEW.seq IS NOT NULL AND NEW.seq <> s THEN
        RAISE EXCEPTION 'rowcast: seq must be the document''s last seq + 1 (%)', s
            USING ERRCODE = 'check_violation';
    END IF;
    PERFORM set_config(slot, s || ' ' || w || ' ' || NEW.room_id, true);
    NEW.seq := s;
    NEW.inserted_at := COALESCE(NEW.inserted_at, clock_timestamp());
    RETURN NEW;
END $$;

CREATE TRIGGER document_ops_seq BEFORE INSERT ON document_ops
    FOR EACH ROW EXECUTE FUNCTION rowcast_document_ops_seq();

CREATE FUNCTION rowcast_document_ops_seq_write() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    slot text := 'rowcast.d' || (hashtext(NEW.room_id) & 1023)::text;
    v text := current_setting(slot, true);
    s text;
    w text;
BEGIN
    IF v <> '' THEN
        s := split_part(v, ' ', 1);
        w := split_part(v, ' ', 2);
        IF s <> w AND substr(v, length(s) + length(w) + 3) = NEW.room_id THEN
            UPDATE rooms SET doc_last_seq = s::bigint WHERE id = NEW.room_id;
            PERFORM set_config(slot, s || ' ' || s || ' ' || NEW.room_id, true);
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER document_ops_seq_write AFTER INSERT ON document_ops
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION rowcast_document_ops_seq_write();

CREATE OR REPLACE FUNCTION rowcast_rooms_forget_seq() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    slot text;
    v text;
BEGIN
    FOREACH slot IN ARRAY ARRAY['rowcast.m', 'rowcast.d'] LOOP
        slot := slot || (hashtext(OLD.id) & 1023)::text;
        v := current_setting(slot, true);
        IF v <> '' AND substr(v, length(split_part(v, ' ', 1))
                                 + length(split_part(v, ' ', 2)) + 3) = OLD.id THEN
            PERFORM set_config(slot, '', true);
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
