-- Broadcasts on a room's private channel (realtime:<room_id>): durable changes of the
-- room's log, like the life of a message (0003). Each is a row of room_changes with
-- event 'broadcast', seq 0 (no message), user_id the sender ('' when the server, REST or
-- SQL sent it) and payload {"event":E,"payload":P,"user_id":U or null,"version":V}; it
-- takes the room's next version, is delivered as every change is, replayed by version or
-- by time, and goes with the room.
--
-- room_broadcasts is the table for SQL writers and readers: one row per broadcast, seq its
-- version, event and payload (JSON text) the user's. An INSERT writes the room_changes
-- row; seq and inserted_at are assigned, whatever the INSERT gives. (The name is the
-- PostgreSQL one, where broadcasts already holds the ephemeral broadcasts of 0003.)
--
--   INSERT INTO room_broadcasts(room_id, event, payload) VALUES ('lobby', 'ping', '{"n":1}');

-- Replay by time (config.broadcast.replay.since) reads the room's broadcasts from a time on.
CREATE INDEX room_changes_broadcasts ON room_changes(room_id, inserted_at)
    WHERE event = 'broadcast';

-- payload: the JSON text of any value (json_extract gives SQL values for scalars, 1 and 0
-- for true and false).
CREATE VIEW room_broadcasts(room_id, seq, event, payload, user_id, inserted_at) AS
SELECT room_id, version, json_extract(payload, '$.event'),
       CASE json_type(payload, '$.payload')
           WHEN 'true' THEN 'true'
           WHEN 'false' THEN 'false'
           ELSE json_quote(json_extract(payload, '$.payload'))
       END,
       user_id, inserted_at
  FROM room_changes WHERE event = 'broadcast';

-- The event is a string, the payload JSON text (NULL: null); the room's next version, as
-- every change takes it.
CREATE TRIGGER room_broadcasts_insert INSTEAD OF INSERT ON room_broadcasts
BEGIN
    SELECT RAISE(ABORT, 'rowcast: no such room')
     WHERE NOT EXISTS (SELECT 1 FROM rooms WHERE id = NEW.room_id);
    SELECT RAISE(ABORT, 'rowcast: invalid broadcast')
     WHERE typeof(NEW.event) <> 'text'
        OR (NEW.payload IS NOT NULL AND NOT json_valid(NEW.payload));
    UPDATE rooms SET version = version + 1 WHERE id = NEW.room_id;
    INSERT INTO room_changes(room_id, version, seq, user_id, event, payload)
    SELECT r.id, r.version, 0, COALESCE(NEW.user_id, ''), 'broadcast',
           json_object('event', NEW.event, 'payload', json(NEW.payload),
                       'user_id', NULLIF(NEW.user_id, ''), 'version', r.version)
      FROM rooms r WHERE r.id = NEW.room_id;
END;
