-- Collaborative documents: document:<id> shares its id and memberships with room <id>.
-- Each edit is an operation in a per-document log with its own gapless seq, assigned
-- like message seqs (by the database, so any writer gets one).

ALTER TABLE rooms ADD COLUMN doc_last_seq INTEGER NOT NULL DEFAULT 0;

CREATE TABLE document_ops (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id     TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    seq         INTEGER,
    user_id     TEXT NOT NULL,
    operation   TEXT NOT NULL,
    data        TEXT NOT NULL DEFAULT 'null',
    inserted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE UNIQUE INDEX document_ops_room_seq ON document_ops(room_id, seq);

CREATE TRIGGER document_ops_room_exists BEFORE INSERT ON document_ops
WHEN NOT EXISTS (SELECT 1 FROM rooms WHERE id = NEW.room_id)
BEGIN
    SELECT RAISE(ABORT, 'rowcast: no such room');
END;

CREATE TRIGGER document_ops_seq_given BEFORE INSERT ON document_ops
WHEN NEW.seq IS NOT NULL
 AND NEW.seq IS NOT (SELECT doc_last_seq + 1 FROM rooms WHERE id = NEW.room_id)
BEGIN
    SELECT RAISE(ABORT, 'rowcast: seq must be the document''s last seq + 1');
END;

CREATE TRIGGER document_ops_assign_seq AFTER INSERT ON document_ops
WHEN NEW.seq IS NULL
BEGIN
    UPDATE rooms SET doc_last_seq = doc_last_seq + 1 WHERE id = NEW.room_id;
    UPDATE document_ops SET seq = (SELECT doc_last_seq FROM rooms WHERE id = NEW.room_id)
     WHERE id = NEW.id;
END;

CREATE TRIGGER document_ops_take_seq AFTER INSERT ON document_ops
WHEN NEW.seq IS NOT NULL
BEGIN
    UPDATE rooms SET doc_last_seq = NEW.seq WHERE id = NEW.room_id;
END;

CREATE TRIGGER rooms_delete_documents AFTER DELETE ON rooms
BEGIN
    DELETE FROM document_ops WHERE room_id = OLD.id;
END;
