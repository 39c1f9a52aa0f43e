-- A room that is deleted may be created again with the same id, and its versions and
-- document seqs then count from 0 again. Nodes keep a watermark per room ("delivered up
-- to version N"), so they are told when a room goes: NOTIFY 'room_gone:<id>' makes every
-- node forget the room's watermarks before the new room's first rows (NOTIFYs arrive in
-- commit order).

CREATE FUNCTION rowcast_notify_room_gone() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rowcast', 'room_gone:' || OLD.id);
    RETURN NULL;
END $$;

CREATE TRIGGER rooms_gone_notify AFTER DELETE ON rooms
    FOR EACH ROW EXECUTE FUNCTION rowcast_notify_room_gone();
