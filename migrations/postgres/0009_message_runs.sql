-- rowcast's runs of new messages, numbered per room in one pass instead of row by row.
--
-- rowcast_messages_add (0006) inserted a run through the row triggers of 0001 and 0005:
-- seven PL/pgSQL calls per message (the reply check, the seq and its write-back, the log
-- row, its version and that write-back, the NOTIFY), which kept the writer's backend at a
-- full core at about 6,000 messages a second. Now it takes each of the run's rooms once:
-- locks its row, reads its counts (the triggers' pending ones, when this transaction
-- counted on in a setting), writes the new counts to the row, then inserts the messages
-- and their log rows already numbered, in two statements, and sends one NOTIFY per room.
--
-- The triggers stay for every other writer (psql, other backends, rowcast's edits,
-- reactions and broadcasts), and counts stay one sequence whoever writes: the triggers
-- continue from the room row or the setting this function leaves. They skip only the
-- rows of this function, which sets rowcast.bulk to 'on' for its two INSERTs. That
-- setting is this function's own: a client that sets it inserts rows nobody numbers.

DROP TRIGGER messages_reply_to ON messages;
CREATE TRIGGER messages_reply_to BEFORE INSERT ON messages
    FOR EACH ROW WHEN (current_setting('rowcast.bulk', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rowcast_messages_reply_to();

DROP TRIGGER messages_seq ON messages;
CREATE TRIGGER messages_seq BEFORE INSERT ON messages
    FOR EACH ROW WHEN (current_setting('rowcast.bulk', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rowcast_messages_seq();

DROP TRIGGER messages_seq_write ON messages;
CREATE CONSTRAINT TRIGGER messages_seq_write AFTER INSERT ON messages
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (current_setting('rowcast.bulk', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rowcast_messages_seq_write();

DROP TRIGGER messages_logged ON messages;
CREATE TRIGGER messages_logged AFTER INSERT ON messages
    FOR EACH ROW WHEN (current_setting('rowcast.bulk', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rowcast_messages_logged();

DROP TRIGGER room_changes_version ON room_changes;
CREATE TRIGGER room_changes_version BEFORE INSERT ON room_changes
    FOR EACH ROW WHEN (current_setting('rowcast.bulk', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rowcast_room_changes_version();

DROP TRIGGER room_changes_version_write ON room_changes;
CREATE CONSTRAINT TRIGGER room_changes_version_write AFTER INSERT ON room_changes
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (current_setting('rowcast.bulk', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rowcast_room_changes_version_write();

DROP TRIGGER room_changes_notify ON room_changes;
CREATE TRIGGER room_changes_notify AFTER INSERT ON room_changes
    FOR EACH ROW WHEN (current_setting('rowcast.bulk', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rowcast_notify_message();

-- The count a setting slot of 0001/0005 ("<count> <count written> <room>") holds for
-- p_room, or NULL when it holds another room or nothing.
CREATE FUNCTION rowcast_slot_count(p_slot text, p_room text) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v text := current_setting(p_slot, true);
    s text;
    w text;
BEGIN
    IF v IS NULL OR v = '' THEN
        RETURN NULL;
    END IF;
    s := split_part(v, ' ', 1);
    w := split_part(v, ' ', 2);
    IF substr(v, length(s) + length(w) + 3) = p_room THEN
        RETURN s::bigint;
    END IF;
    RETURN NULL;
END $$;

-- A run of new messages, numbered in the arrays' order within each room, their ids and
-- their changes' ids in the arrays' order (a node delivers its own commits in request
-- order, by change id); returns each with its change (in no particular order). An unknown room raises foreign_key_violation,
-- a reply_to that names no message of the room before it (or a deleted one)
-- check_violation, as the triggers do.
CREATE OR REPLACE FUNCTION rowcast_messages_add(p_rooms text[], p_users text[],
                                                p_bodies text[], p_reply_tos bigint[])
RETURNS TABLE (o_id bigint, o_room text, o_seq bigint, o_inserted_at text,
               o_change rowcast_change)
LANGUAGE plpgsql AS $$
DECLARE
    rms text[];     -- the run's rooms, in lock order
    cnt bigint[];   -- how many of the run's messages each takes
    seq0 bigint[];  -- each room's last seq before the run
    ver0 bigint[];  -- and its last version
    seqs bigint[];  -- every message's seq, in the arrays' order
    vers bigint[];  -- and its change's version
    rm text;
    s bigint;
    v bigint;
    pending bigint;
    bad bigint;
    t timestamptz;
    at text;
BEGIN
    SELECT array_agg(g.r ORDER BY g.r COLLATE "C"), array_agg(g.n ORDER BY g.r COLLATE "C")
      INTO rms, cnt
      FROM (SELECT x.r, count(*) AS n FROM unnest(p_rooms) AS x(r) GROUP BY x.r) g;
    FOR k IN 1 .. COALESCE(array_length(rms, 1), 0) LOOP
        rm := rms[k];
        SELECT last_seq, version INTO s, v FROM rooms WHERE id = rm FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'rowcast: no such room %', rm USING ERRCODE = 'foreign_key_violation';
        END IF;
        pending := rowcast_slot_count('rowcast.m' || (hashtext(rm) & 1023)::text, rm);
        IF pending IS NOT NULL THEN
            s := pending;
            PERFORM set_config('rowcast.m' || (hashtext(rm) & 1023)::text,
                               (s + cnt[k]) || ' ' || (s + cnt[k]) || ' ' || rm, true);
        END IF;
        pending := rowcast_slot_count('rowcast.v' || (hashtext(rm) & 1023)::text, rm);
        IF pending IS NOT NULL THEN
            v := pending;
            PERFORM set_config('rowcast.v' || (hashtext(rm) & 1023)::text,
                               (v + cnt[k]) || ' ' || (v + cnt[k]) || ' ' || rm, true);
        END IF;
        UPDATE rooms SET last_seq = s + cnt[k], version = v + cnt[k] WHERE id = rm;
        seq0[k] := s;
        ver0[k] := v;
    END LOOP;

    SELECT array_agg(n.s0 + n.k ORDER BY n.o), array_agg(n.v0 + n.k ORDER BY n.o)
      INTO seqs, vers
      FROM (SELECT x.o, b.s0, b.v0, row_number() OVER (PARTITION BY x.r ORDER BY x.o) AS k
              FROM unnest(p_rooms) WITH ORDINALITY AS x(r, o)
              JOIN unnest(rms, seq0, ver0) AS b(r, s0, v0) ON b.r = x.r) n;

    -- A reply names an earlier message of its room: one already there and not deleted,
    -- or one of this run before it.
    SELECT x.p INTO bad
      FROM unnest(p_rooms, p_reply_tos, seqs) AS x(r, p, q)
      JOIN unnest(rms, seq0) AS b(r, s0) ON b.r = x.r
     WHERE NULLIF(x.p, 0) IS NOT NULL
       AND NOT (x.p > b.s0 AND x.p < x.q)
       AND NOT EXISTS (SELECT 1 FROM messages m
                        WHERE m.room_id = x.r AND m.seq = x.p AND m.deleted_at IS NULL)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'rowcast: invalid reply_to %', bad USING ERRCODE = 'check_violation';
    END IF;

    t := clock_timestamp();
    at := rowcast_iso(t);
    PERFORM set_config('rowcast.bulk', 'on', true);
    RETURN QUERY
    WITH ins AS (
        INSERT INTO messages(room_id, seq, user_id, body, reply_to, inserted_at)
        SELECT x.r, x.q, x.u, x.b, NULLIF(x.p, 0), t
          FROM unnest(p_rooms, seqs, p_users, p_bodies, p_reply_tos)
               WITH ORDINALITY AS x(r, q, u, b, p, o)
         ORDER BY x.o
        RETURNING id, room_id, seq, user_id, body, reply_to),
    ch AS (
        INSERT INTO room_changes(room_id, version, seq, user_id, event, payload, inserted_at)
        SELECT i.room_id, y.v, i.seq, i.user_id, 'new_message',
               jsonb_build_object('body', i.body, 'id', i.id, 'inserted_at', at,
                                  'reply_to', i.reply_to, 'seq', i.seq,
                                  'user_id', i.user_id, 'version', y.v), t
          FROM ins i
          JOIN unnest(p_rooms, seqs, vers) AS y(r, q, v) ON y.r = i.room_id AND y.q = i.seq
         ORDER BY i.id
        RETURNING id, room_id, version, seq, user_id, event, payload)
    SELECT i.id, i.room_id, i.seq, at,
           ROW(c.id, c.version, c.seq, c.user_id, c.event, c.payload::text, at)::rowcast_change
      FROM ins i JOIN ch c ON c.room_id = i.room_id AND c.seq = i.seq;
    PERFORM set_config('rowcast.bulk', 'off', true);
    FOREACH rm IN ARRAY COALESCE(rms, '{}') LOOP
        PERFORM pg_notify('rowcast', 'room:' || rm);
    END LOOP;
END $$;
