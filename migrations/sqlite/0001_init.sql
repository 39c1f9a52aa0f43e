-- rowcast schema, SQLite dialect.
-- Times are ISO-8601 UTC text with milliseconds, e.g. 2026-11-28T08:15:00.123Z.

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    avatar_url  TEXT,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE rooms (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    last_seq    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE memberships (
    room_id     TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('owner', 'editor', 'member', 'viewer')),
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_user ON memberships(user_id);

-- AUTOINCREMENT: ids only grow, so "rows with id above the last one delivered" finds
-- every newly committed message, even after the newest rows were deleted.
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id     TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    seq         INTEGER,
    user_id     TEXT NOT NULL,
    body        TEXT NOT NULL,
    inserted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE UNIQUE INDEX messages_room_seq ON messages(room_id, seq);

-- seq is gapless per room and assigned here, so a plain INSERT from any process gets
-- one. SQLite runs one writer at a time, so commit order equals seq order per room.
-- An INSERT may also name the seq itself, but only the next one (rowcast does, to get
-- it back with RETURNING in one statement).
CREATE TRIGGER messages_room_exists BEFORE INSERT ON messages
WHEN NOT EXISTS (SELECT 1 FROM rooms WHERE id = NEW.room_id)
BEGIN
    SELECT RAISE(ABORT, 'rowcast: no such room');
END;

CREATE TRIGGER messages_seq_given BEFORE INSERT ON messages
WHEN NEW.seq IS NOT NULL
 AND NEW.seq IS NOT (SELECT last_seq + 1 FROM rooms WHERE id = NEW.room_id)
BEGIN
    SELECT RAISE(ABORT, 'rowcast: seq must be the room''s last_seq + 1');
END;

CREATE TRIGGER messages_assign_seq AFTER INSERT ON messages
WHEN NEW.seq IS NULL
BEGIN
    UPDATE rooms SET last_seq = last_seq + 1 WHERE id = NEW.room_id;
    UPDATE messages SET seq = (SELECT last_seq FROM rooms WHERE id = NEW.room_id)
     WHERE id = NEW.id;
END;

CREATE TRIGGER messages_take_seq AFTER INSERT ON messages
WHEN NEW.seq IS NOT NULL
BEGIN
    UPDATE rooms SET last_seq = NEW.seq WHERE id = NEW.room_id;
END;

-- Deleting a room removes its messages and memberships even when the deleting
-- connection did not enable foreign keys.
CREATE TRIGGER rooms_delete_cascade AFTER DELETE ON rooms
BEGIN
    DELETE FROM messages WHERE room_id = OLD.id;
    DELETE FROM memberships WHERE room_id = OLD.id;
END;

CREATE TABLE notifications (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     TEXT NOT NULL,
    payload     TEXT NOT NULL DEFAULT '{}',
    inserted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    read_at     TEXT
);
CREATE INDEX notifications_user ON notifications(user_id, id);
