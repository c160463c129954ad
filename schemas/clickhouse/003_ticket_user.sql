-- Version 3: the user on each ticket.
-- Tickets carry the user who filed them (facts written before this have an empty user_id).
ALTER TABLE cci_tickets ADD COLUMN IF NOT EXISTS user_id String AFTER ticket_id;
