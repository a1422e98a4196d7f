-- A token may expire (ms since the epoch): past it, it lets no one in.
-- Rotation renames the old token and gives it an expiry a little later
-- than now, so that both work while its holder switches.
ALTER TABLE tokens ADD COLUMN expires_at BIGINT;
