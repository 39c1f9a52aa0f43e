-- rowcast's own writes of the message life (0005), one function call each: the checks
-- that need the message's row (is it there, deleted, whose is it, is the writer an owner),
-- the write itself, and what it returns (the version the change took, read back from
-- room_changes: rooms.version only gets it at commit). The batch writer then sends one
-- statement per request and learns everything from its result, without an error (which
-- would abort the batch's transaction) for a refusal. Plain SQL writers do not need these:
-- the triggers of 0005 log their writes the same way.
--
-- Each of them takes the room's row lock first, as a new message does (its seq trigger,
-- 0001), and only then the message's row, so two of rowcast's writers of a room take turns
-- on the room and never wait for each other in a cycle. (A plain SQL UPDATE of a message
-- locks the message first and the room when its trigger logs the change: against such a
-- writer PostgreSQL may detect a deadlock and cancel one of the two.)

-- A change as the store reads it (store_pg_int.h: STORE_PG_CHANGE_COLS).
CREATE TYPE rowcast_change AS (
    id          bigint,
    version     bigint,
    seq         bigint,
    user_id     text,
    event       text,
    payload     text,
    inserted_at text
);

-- The room's latest change. Called under the room's lock right after a write that logged
-- one: nobody else can log a later one before this transaction ends, so it is that write's.
CREATE FUNCTION rowcast_room_last_change(p_room text) RETURNS rowcast_change
LANGUAGE sql VOLATILE AS $$
    SELECT id, version, seq, user_id, event, payload::text, rowcast_iso(inserted_at)
      FROM room_changes WHERE room_id = p_room ORDER BY version DESC LIMIT 1
$$;

-- The room's current version as this transaction sees it (rooms.version lags behind the
-- changes this transaction logged until it commits).
CREATE FUNCTION rowcast_room_version(p_room text) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT GREATEST(r.version, COALESCE((SELECT c.version FROM room_changes c
                                          WHERE c.room_id = p_room
                                          ORDER BY c.version DESC LIMIT 1), 0))
      FROM rooms r WHERE r.id = p_room
$$;

-- Takes the room's row lock (the one the triggers take to count its seqs and versions)
-- for the rest of the transaction; false when there is no such room.
CREATE FUNCTION rowcast_lock_room(p_room text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM rooms WHERE id = p_room FOR NO KEY UPDATE;
    RETURN FOUND;
END $$;

-- A new message (reply_to 0 or NULL: none). An unknown room raises foreign_key_violation,
-- an invalid reply_to check_violation (the triggers of 0001 and 0005).
CREATE FUNCTION rowcast_message_add(p_room text, p_user text, p_body text, p_reply_to bigint,
                                    OUT o_id bigint, OUT o_seq bigint, OUT o_inserted_at text,
                                    OUT o_change rowcast_change)
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz;
BEGIN
    INSERT INTO messages(room_id, user_id, body, reply_to)
    VALUES (p_room, p_user, p_body, NULLIF(p_reply_to, 0))
    RETURNING id, seq, inserted_at INTO o_id, o_seq, t;
    o_inserted_at := rowcast_iso(t);
    o_change := rowcast_room_last_change(p_room);
END $$;

-- A run of new messages in one INSERT, numbered in the arrays' order within each room;
-- returns each with its change (in no particular order).
CREATE FUNCTION rowcast_messages_add(p_rooms text[], p_users text[], p_bodies text[],
                                     p_reply_tos bigint[])
RETURNS TABLE (o_id bigint, o_room text, o_seq bigint, o_inserted_at text,
               o_change rowcast_change)
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
BEGIN
    WITH ins AS (
        INSERT INTO messages(room_id, user_id, body, reply_to)
        SELECT r, u, b, NULLIF(p, 0)
          FROM unnest(p_rooms, p_users, p_bodies, p_reply_tos) WITH ORDINALITY AS t(r, u, b, p, o)
         ORDER BY o
        RETURNING id)
    SELECT array_agg(id) INTO ids FROM ins;
    RETURN QUERY
    SELECT m.id, m.room_id, m.seq, rowcast_iso(m.inserted_at),
           ROW(c.id, c.version, c.seq, c.user_id, c.event, c.payload::text,
               rowcast_iso(c.inserted_at))::rowcast_change
      FROM messages m
      JOIN room_changes c ON c.room_id = m.room_id AND c.seq = m.seq AND c.event = 'new_message'
     WHERE m.id = ANY(ids);
END $$;

-- An edit (p_body) or, with p_delete, a delete (the body is erased, 0005) of message p_seq
-- by p_user, with the room's and then the message's row locked. o_status: 'not_found' (room
-- or message), 'gone' (deleted), 'forbidden' (p_user, when given, is not the author, nor,
-- for a delete, an owner of the room) or 'ok'. Then the message after it, the room's
-- version, and the change (NULL when there was none: the same body again).
CREATE FUNCTION rowcast_message_change(p_room text, p_seq bigint, p_body text, p_user text,
                                       p_delete boolean, OUT o_status text, OUT o_id bigint,
                                       OUT o_author text, OUT o_inserted_at text,
                                       OUT o_reply_to bigint, OUT o_edited_at text,
                                       OUT o_deleted_at text, OUT o_version bigint,
                                       OUT o_change rowcast_change)
LANGUAGE plpgsql AS $$
DECLARE
    m messages;
BEGIN
    IF NOT rowcast_lock_room(p_room) THEN
        o_status := 'not_found';
        RETURN;
    END IF;
    SELECT * INTO m FROM messages WHERE room_id = p_room AND seq = p_seq FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        o_status := 'not_found';
        RETURN;
    ELSIF m.deleted_at IS NOT NULL THEN
        o_status := 'gone';
        RETURN;
    ELSIF p_user IS NOT NULL AND m.user_id <> p_user
          AND NOT (p_delete AND EXISTS (SELECT 1 FROM memberships
                                         WHERE room_id = p_room AND user_id = p_user
                                           AND role = 'owner')) THEN
        o_status := 'forbidden';
        RETURN;
    END IF;
    o_status := 'ok';
    IF p_delete THEN
        UPDATE messages SET deleted_at = clock_timestamp() WHERE id = m.id RETURNING * INTO m;
        o_change := rowcast_room_last_change(p_room);
    ELSIF m.body IS DISTINCT FROM p_body THEN
        UPDATE messages SET body = p_body WHERE id = m.id RETURNING * INTO m;
        o_change := rowcast_room_last_change(p_room);
    END IF;
    o_id := m.id;
    o_author := m.user_id;
    o_inserted_at := rowcast_iso(m.inserted_at);
    o_reply_to := m.reply_to;
    o_edited_at := rowcast_iso(m.edited_at);
    o_deleted_at := rowcast_iso(m.deleted_at);
    o_version := rowcast_room_version(p_room);
END $$;

-- Adds (p_add) or removes p_user's reaction p_emoji to a message: 'not_found' (room or
-- message), 'gone' (deleted) or 'ok', with the change (NULL when there was nothing to add
-- or remove) and the room's version after it.
CREATE FUNCTION rowcast_reaction_write(p_room text, p_seq bigint, p_user text, p_emoji text,
                                       p_add boolean, OUT o_status text, OUT o_version bigint,
                                       OUT o_change rowcast_change)
LANGUAGE plpgsql AS $$
DECLARE
    d timestamptz;
BEGIN
    IF NOT rowcast_lock_room(p_room) THEN
        o_status := 'not_found';
        RETURN;
    END IF;
    SELECT deleted_at INTO d FROM messages WHERE room_id = p_room AND seq = p_seq;
    IF NOT FOUND THEN
        o_status := 'not_found';
        RETURN;
    END IF;
    IF d IS NOT NULL THEN
        o_status := 'gone';
        RETURN;
    END IF;
    o_status := 'ok';
    IF p_add THEN
        INSERT INTO reactions(room_id, seq, emoji, user_id)
        VALUES (p_room, p_seq, p_emoji, p_user) ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM reactions
         WHERE room_id = p_room AND seq = p_seq AND emoji = p_emoji AND user_id = p_user;
    END IF;
    IF FOUND THEN
        o_change := rowcast_room_last_change(p_room);
    END IF;
    o_version := rowcast_room_version(p_room);
END $$;

-- Moves p_user's read cursor in the room to p_seq, never backwards nor past the room's
-- last message: 'not_found' (room), 'forbidden' (not a member) or 'ok', with the room's
-- last seq and the member's role, cursor and unread count after it.
CREATE FUNCTION rowcast_read_mark(p_room text, p_user text, p_seq bigint, OUT o_status text,
                                  OUT o_last_seq bigint, OUT o_role text,
                                  OUT o_last_read_seq bigint, OUT o_unread bigint)
LANGUAGE plpgsql AS $$
BEGIN
    -- rooms.last_seq also lags behind this transaction's messages until commit.
    SELECT GREATEST(r.last_seq, COALESCE((SELECT x.seq FROM messages x WHERE x.room_id = p_room
                                           ORDER BY x.seq DESC LIMIT 1), 0))
      INTO o_last_seq FROM rooms r WHERE r.id = p_room;
    IF NOT FOUND THEN
        o_status := 'not_found';
        RETURN;
    END IF;
    UPDATE memberships SET last_read_seq = GREATEST(last_read_seq, LEAST(p_seq, o_last_seq))
     WHERE room_id = p_room AND user_id = p_user
    RETURNING role, last_read_seq INTO o_role, o_last_read_seq;
    IF NOT FOUND THEN
        o_status := 'forbidden';
        RETURN;
    END IF;
    o_status := 'ok';
    SELECT count(*) INTO o_unread FROM messages
     WHERE room_id = p_room AND seq > o_last_read_seq AND user_id <> p_user
       AND deleted_at IS NULL;
END $$;
