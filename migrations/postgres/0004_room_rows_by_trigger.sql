-- The room of every message and document operation is already checked, and its row
-- locked to the end of the transaction, by the seq triggers of 0001 and 0002: an unknown
-- room raises foreign_key_violation there. The foreign keys checked it a second time for
-- every row (a lookup and a row lock each, about a third of the cost of an INSERT with
-- its triggers), so they go; deleting a room removes its messages and operations by
-- trigger instead, as in the SQLite schema.
--
-- Concurrency stays as it was: a transaction that inserts into a room holds that room's
-- row lock (FOR NO KEY UPDATE) until it ends, so a DELETE of the room waits for it and
-- then removes its rows too; an INSERT that waited on a room deleted meanwhile finds no
-- room and fails.

ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_room_id_fkey;
ALTER TABLE document_ops DROP CONSTRAINT IF EXISTS document_ops_room_id_fkey;

CREATE FUNCTION rowcast_rooms_delete_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM messages WHERE room_id = OLD.id;
    DELETE FROM document_ops WHERE room_id = OLD.id;
    RETURN NULL;
END $$;

CREATE TRIGGER rooms_delete_rows AFTER DELETE ON rooms
    FOR EACH ROW EXECUTE FUNCTION rowcast_rooms_delete_rows();
