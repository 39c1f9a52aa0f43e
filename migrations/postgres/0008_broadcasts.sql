-- Broadcasts on a room's private channel (realtime:<room_id>): durable changes of the
-- room's log, like the life of a message (0005). Each is a row of room_changes with
-- event 'broadcast', seq 0 (no message), user_id the sender ('' when the server, REST or
-- SQL sent it) and payload {"event":E,"payload":P,"user_id":U or null,"version":V}; the
-- version trigger of 0005 gives it the room's next version under the room's lock (an
-- unknown room raises foreign_key_violation), its NOTIFY wakes every node, it is replayed
-- by version or by time, and it goes with the room.
--
-- The names say room: broadcasts and rowcast_broadcast(topic, event, payload) are the
-- ephemeral broadcasts to any topic of 0003.
--
--   SELECT rowcast_room_broadcast('lobby', 'ping', '{"n":1}');          -- its version
--   INSERT INTO room_broadcasts(room_id, event, payload) VALUES ('lobby', 'ping', '{"n":1}');

-- Replay by time (config.broadcast.replay.since) reads the room's broadcasts from a time on.
CREATE INDEX room_changes_broadcasts ON room_changes(room_id, inserted_at)
    WHERE event = 'broadcast';

-- Logs a broadcast (p_user NULL or '': the server) and returns its row as logged.
CREATE FUNCTION rowcast_room_broadcast_log(p_room text, p_event text, p_payload jsonb,
                                           p_user text) RETURNS room_changes
LANGUAGE plpgsql AS $$
DECLARE
    c room_changes;
BEGIN
    IF p_room IS NULL THEN
        RAISE EXCEPTION 'rowcast: no such room'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF p_event IS NULL THEN
        RAISE EXCEPTION 'rowcast: a broadcast needs an event'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    INSERT INTO room_changes(room_id, seq, user_id, event, payload)
    VALUES (p_room, 0, COALESCE(p_user, ''), 'broadcast',
            jsonb_build_object('event', p_event, 'payload', p_payload,
                               'user_id', NULLIF(p_user, '')))
    RETURNING * INTO c;
    RETURN c;
END $$;

-- A broadcast to room_id's members (user_id NULL: from the server); returns its version.
-- Delivered at commit, as every change of the room.
CREATE FUNCTION rowcast_room_broadcast(room_id text, event text, payload jsonb,
                                       user_id text DEFAULT NULL) RETURNS bigint
LANGUAGE sql AS $$
    SELECT version FROM rowcast_room_broadcast_log($1, $2, $3, $4)
$$;

-- One row per broadcast: seq its version, event and payload the user's. An INSERT logs it
-- (seq, user_id and inserted_at come back as logged with RETURNING).
CREATE VIEW room_broadcasts AS
SELECT room_id, version AS seq, payload ->> 'event' AS event, payload -> 'payload' AS payload,
       user_id, inserted_at
  FROM room_changes WHERE event = 'broadcast';

CREATE FUNCTION rowcast_room_broadcasts_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    c room_changes;
BEGIN
    c := rowcast_room_broadcast_log(NEW.room_id, NEW.event, NEW.payload, NEW.user_id);
    NEW.seq := c.version;
    NEW.user_id := c.user_id;
    NEW.inserted_at := c.inserted_at;
    RETURN NEW;
END $$;

CREATE TRIGGER room_broadcasts_insert INSTEAD OF INSERT ON room_broadcasts
    FOR EACH ROW EXECUTE FUNCTION rowcast_room_broadcasts_insert();
