-- The life of a message: edits, deletes, reactions, replies and read cursors, each a
-- durable change with the room's next version.
--
-- room_changes is the log: one row per change, numbered by rooms.version (gapless per
-- room, separate from message seq), holding the event and the exact payload that is
-- broadcast, so a client that was away replays what it missed by version. The triggers
-- below write every row of it, so rowcast's own writes and an INSERT, UPDATE or DELETE
-- from any other process take the same path. Delivery scans the log by id, as it scans
-- messages and notifications: AUTOINCREMENT ids only grow and, with one writer at a
-- time, follow version order within a room.

ALTER TABLE rooms ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN reply_to INTEGER;
ALTER TABLE messages ADD COLUMN edited_at TEXT;
ALTER TABLE messages ADD COLUMN deleted_at TEXT;
ALTER TABLE memberships ADD COLUMN last_read_seq INTEGER NOT NULL DEFAULT 0;

CREATE INDEX messages_replies ON messages(room_id, reply_to, seq) WHERE reply_to IS NOT NULL;

CREATE TABLE reactions (
    room_id     TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    emoji       TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (room_id, seq, emoji, user_id)
);

CREATE TABLE room_changes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id     TEXT NOT NULL,
    version     INTEGER NOT NULL,
    seq         INTEGER NOT NULL,   -- the message the change is about
    user_id     TEXT NOT NULL,      -- that message's author
    event       TEXT NOT NULL,
    payload     TEXT NOT NULL,      -- JSON object text, as broadcast
    inserted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE UNIQUE INDEX room_changes_room_version ON room_changes(room_id, version);
CREATE INDEX room_changes_room_seq ON room_changes(room_id, seq);

-- A reply names a message of the same room that is there and not deleted.
CREATE TRIGGER messages_reply_to_exists BEFORE INSERT ON messages
WHEN NEW.reply_to IS NOT NULL
 AND NOT EXISTS (SELECT 1 FROM messages
                  WHERE room_id = NEW.room_id AND seq = NEW.reply_to AND deleted_at IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'rowcast: invalid reply_to');
END;

-- The seq triggers of 0001 now also take the room's next version and log new_message.
-- (Recreated rather than added beside: the order in which SQLite runs two AFTER INSERT
-- triggers is not defined, and the change needs the seq.)
DROP TRIGGER messages_assign_seq;
DROP TRIGGER messages_take_seq;

CREATE TRIGGER messages_assign_seq AFTER INSERT ON messages
WHEN NEW.seq IS NULL
BEGIN
    UPDATE rooms SET last_seq = last_seq + 1, version = version + 1 WHERE id = NEW.room_id;
    UPDATE messages SET seq = (SELECT last_seq FROM rooms WHERE id = NEW.room_id)
     WHERE id = NEW.id;
    INSERT INTO room_changes(room_id, version, seq, user_id, event, payload)
    SELECT r.id, r.version, r.last_seq, NEW.user_id, 'new_message',
           json_object('body', NEW.body, 'id', NEW.id, 'inserted_at', NEW.inserted_at,
                       'reply_to', NEW.reply_to, 'seq', r.last_seq, 'user_id', NEW.user_id,
                       'version', r.version)
      FROM rooms r WHERE r.id = NEW.room_id;
END;

CREATE TRIGGER messages_take_seq AFTER INSERT ON messages
WHEN NEW.seq IS NOT NULL
BEGIN
    UPDATE rooms SET last_seq = NEW.seq, version = version + 1 WHERE id = NEW.room_id;
    INSERT INTO room_changes(room_id, version, seq, user_id, event, payload)
    SELECT r.id, r.version, NEW.seq, NEW.user_id, 'new_message',
           json_object('body', NEW.body, 'id', NEW.id, 'inserted_at', NEW.inserted_at,
                       'reply_to', NEW.reply_to, 'seq', NEW.seq, 'user_id', NEW.user_id,
                       'version', r.version)
      FROM rooms r WHERE r.id = NEW.room_id;
END;

-- An edit: a new body on a message that is not deleted.
CREATE TRIGGER messages_edit AFTER UPDATE OF body ON messages
WHEN OLD.deleted_at IS NULL AND NEW.deleted_at IS NULL AND NEW.body IS NOT OLD.body
BEGIN
    UPDATE messages SET edited_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = NEW.id;
    UPDATE rooms SET version = version + 1 WHERE id = NEW.room_id;
    INSERT INTO room_changes(room_id, version, seq, user_id, event, payload)
    SELECT r.id, r.version, NEW.seq, NEW.user_id, 'message_updated',
           json_object('body', NEW.body, 'edited_at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                       'seq', NEW.seq, 'user_id', NEW.user_id, 'version', r.version)
      FROM rooms r WHERE r.id = NEW.room_id;
END;

-- A new body on a deleted message stays erased.
CREATE TRIGGER messages_deleted_stays_erased AFTER UPDATE OF body ON messages
WHEN OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NOT NULL AND NEW.body <> ''
BEGIN
    UPDATE messages SET body = '' WHERE id = NEW.id;
END;

CREATE TRIGGER messages_stay_deleted BEFORE UPDATE OF deleted_at ON messages
WHEN OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NOT OLD.deleted_at
BEGIN
    SELECT RAISE(ABORT, 'rowcast: a deleted message stays deleted');
END;

-- A delete: deleted_at set on a message that was not deleted. The body is erased from the
-- row and from the room's earlier changes of that message.
CREATE TRIGGER messages_delete AFTER UPDATE OF deleted_at ON messages
WHEN OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL
BEGIN
    UPDATE messages SET body = '' WHERE id = NEW.id AND body <> '';
    UPDATE room_changes SET payload = json_remove(payload, '$.body')
     WHERE room_id = NEW.room_id AND seq = NEW.seq
       AND event IN ('new_message', 'message_updated');
    UPDATE rooms SET version = version + 1 WHERE id = NEW.room_id;
    INSERT INTO room_changes(room_id, version, seq, user_id, event, payload)
    SELECT r.id, r.version, NEW.seq, NEW.user_id, 'message_deleted',
           json_object('deleted_at', NEW.deleted_at, 'seq', NEW.seq, 'version', r.version)
      FROM rooms r WHERE r.id = NEW.room_id;
END;

-- DELETE FROM messages while the room exists deletes the message as above (a tombstone
-- keeps its seq); deleting the room still removes its rows.
CREATE TRIGGER messages_delete_row BEFORE DELETE ON messages
WHEN EXISTS (SELECT 1 FROM rooms WHERE id = OLD.room_id)
BEGIN
    UPDATE messages SET deleted_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
     WHERE id = OLD.id AND deleted_at IS NULL;
    SELECT RAISE(IGNORE);
END;

CREATE TRIGGER reactions_message_exists BEFORE INSERT ON reactions
WHEN NOT EXISTS (SELECT 1 FROM messages
                  WHERE room_id = NEW.room_id AND seq = NEW.seq AND deleted_at IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'rowcast: no such message');
END;

CREATE TRIGGER reactions_added AFTER INSERT ON reactions
BEGIN
    UPDATE rooms SET version = version + 1 WHERE id = NEW.room_id;
    INSERT INTO room_changes(room_id, version, seq, user_id, event, payload)
    SELECT r.id, r.version, NEW.seq, m.user_id, 'reaction_added',
           json_object('emoji', NEW.emoji, 'seq', NEW.seq, 'user_id', NEW.user_id,
                       'version', r.version)
      FROM rooms r JOIN messages m ON m.room_id = r.id AND m.seq = NEW.seq
     WHERE r.id = NEW.room_id;
END;

CREATE TRIGGER reactions_removed AFTER DELETE ON reactions
WHEN EXISTS (SELECT 1 FROM messages
              WHERE room_id = OLD.room_id AND seq = OLD.seq AND deleted_at IS NULL)
BEGIN
    UPDATE rooms SET version = version + 1 WHERE id = OLD.room_id;
    INSERT INTO room_changes(room_id, version, seq, user_id, event, payload)
    SELECT r.id, r.version, OLD.seq, m.user_id, 'reaction_removed',
           json_object('emoji', OLD.emoji, 'seq', OLD.seq, 'user_id', OLD.user_id,
                       'version', r.version)
      FROM rooms r JOIN messages m ON m.room_id = r.id AND m.seq = OLD.seq
     WHERE r.id = OLD.room_id;
END;

CREATE TRIGGER rooms_delete_changes AFTER DELETE ON rooms
BEGIN
    DELETE FROM reactions WHERE room_id = OLD.id;
    DELETE FROM room_changes WHERE room_id = OLD.id;
END;
