-- xenon_elixir schema. Every statement is idempotent: the whole script runs, in one transaction,
-- when a file is older than this version. PRAGMA user_version records the version; a file from a
-- newer version is refused. Tables with a rowid keep the order rows came in.

-- Elixir API keys: only the SHA-256 hex of a key is kept.
CREATE TABLE IF NOT EXISTS elixir_keys (
    key_hash   TEXT PRIMARY KEY,
    guild_id   TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (guild_id, user_id)
) WITHOUT ROWID;

-- The guild registry that Elixir's join checks, fed by the host bot.
CREATE TABLE IF NOT EXISTS guilds (
    guild_id TEXT PRIMARY KEY,
    name     TEXT NOT NULL
) WITHOUT ROWID;

-- Voice channels are answered in the order they were given in.
CREATE TABLE IF NOT EXISTS voice_channels (
    guild_id   TEXT NOT NULL REFERENCES guilds (guild_id) ON DELETE CASCADE,
    channel_id TEXT NOT NULL,
    PRIMARY KEY (guild_id, channel_id)
);

-- The local catalog the default resolver plays from (length in ms).
CREATE TABLE IF NOT EXISTS tracks (
    track_id   INTEGER PRIMARY KEY,
    source     TEXT NOT NULL,
    identifier TEXT NOT NULL,
    title      TEXT NOT NULL,
    author     TEXT NOT NULL,
    length     INTEGER NOT NULL,
    uri        TEXT NOT NULL,
    thumbnail  TEXT,
    is_stream  INTEGER NOT NULL DEFAULT 0,
    encoded    TEXT,  -- the track as a Lavalink node encodes it, when one resolved it
    UNIQUE (source, identifier)
);

CREATE TABLE IF NOT EXISTS playlists (
    playlist_id INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,
    identifier  TEXT NOT NULL,
    name        TEXT NOT NULL,
    UNIQUE (source, identifier)
);

CREATE TABLE IF NOT EXISTS playlist_tracks (
    playlist_id INTEGER NOT NULL REFERENCES playlists (playlist_id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    track_id    INTEGER NOT NULL REFERENCES tracks (track_id) ON DELETE CASCADE,
    PRIMARY KEY (playlist_id, position)
) WITHOUT ROWID;

-- One music player per connected guild. The head of its queue is the current track;
-- its position is `position` ms at clock time `anchor` (frozen while paused). `ends_at` is when
-- the current track ends (NULL while nothing ends by itself), so the next end is one indexed
-- lookup; `size` counts the queue's entries, the current one included.
CREATE TABLE IF NOT EXISTS players (
    guild_id   TEXT PRIMARY KEY,
    channel_id TEXT NOT NULL,
    volume     INTEGER NOT NULL,
    paused     INTEGER NOT NULL,
    position   REAL NOT NULL,
    anchor     REAL NOT NULL,
    ends_at    REAL,
    size       INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS players_by_end ON players (ends_at) WHERE ends_at IS NOT NULL;

-- Queue entries hold a copy of their track, so any resolver's tracks can be queued.
-- Entries are only appended (entry_id grows) and deleted from the head.
CREATE TABLE IF NOT EXISTS queue (
    entry_id   INTEGER PRIMARY KEY,
    guild_id   TEXT NOT NULL,
    source     TEXT NOT NULL,
    identifier TEXT NOT NULL,
    title      TEXT NOT NULL,
    author     TEXT NOT NULL,
    length     INTEGER NOT NULL,
    uri        TEXT NOT NULL,
    thumbnail  TEXT,
    is_stream  INTEGER NOT NULL,
    requested_by TEXT NOT NULL,
    encoded    TEXT
);

CREATE INDEX IF NOT EXISTS queue_by_guild ON queue (guild_id, entry_id);

-- Xenon partner bots. A revoked bot keeps its row (and its template attachments) with no token.
CREATE TABLE IF NOT EXISTS bots (
    bot_id     TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    token_hash TEXT UNIQUE,
    created_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS templates (
    template_id TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    source_id   TEXT NOT NULL,
    creator_id  TEXT NOT NULL,
    created_at  REAL NOT NULL
) WITHOUT ROWID;

-- Bots are listed in the order they attached.
CREATE TABLE IF NOT EXISTS template_bots (
    template_id TEXT NOT NULL REFERENCES templates (template_id) ON DELETE CASCADE,
    bot_id      TEXT NOT NULL REFERENCES bots (bot_id) ON DELETE CASCADE,
    PRIMARY KEY (template_id, bot_id)
);

CREATE TABLE IF NOT EXISTS backups (
    backup_id  TEXT PRIMARY KEY,
    source_id  TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;

-- Id mappers: one per (source guild, target guild), accumulated over every load; ids and
-- loaders are answered in first-seen order.
CREATE TABLE IF NOT EXISTS mapper_ids (
    source_id TEXT NOT NULL,
    target_id TEXT NOT NULL,
    old_id    TEXT NOT NULL,
    new_id    TEXT NOT NULL,
    PRIMARY KEY (source_id, target_id, old_id)
);

CREATE TABLE IF NOT EXISTS mapper_loaders (
    source_id TEXT NOT NULL,
    target_id TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    PRIMARY KEY (source_id, target_id, user_id)
);

-- Running loaders: at most one per target guild. `start_seq`, the number of its start event,
-- names one loader apart from the next on the same target.
CREATE TABLE IF NOT EXISTS loaders (
    target_id   TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    source_id   TEXT NOT NULL,
    backup_id   TEXT,
    template_id TEXT,
    user_id     TEXT,
    started_at  REAL NOT NULL,
    start_seq   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- The loader events, as the frames that were sent: start/done for ?since= replay; statuses
-- too, so that a process can fill in one that reached it late (they are not replayed).
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY,
    frame      TEXT NOT NULL,
    created_at REAL NOT NULL
);

CREATE INDEX IF NOT EXISTS events_by_time ON events (created_at);

-- Named values the app keeps across restarts, as JSON: the Lavalink node's session and the bot's
-- voice credentials in each guild, so a restarted app resumes the session (version 5 / 2).
CREATE TABLE IF NOT EXISTS kept (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Numbers (event_seq: events, status events included; pruned_seq: the newest event dropped from
-- the log) come from these rows, moved inside the transaction that publishes; the row stays
-- locked until the commit, so numbers commit in order and keep increasing across restarts.
-- player_seq no longer moves: it numbered every guild's player changes in one order before
-- version 5 (SQLite; 2 on PostgreSQL), and a guild's own numbers start above it.
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- The number of each guild's newest player change: a guild's changes are numbered in their
-- order, apart from every other guild's (so they never wait for each other's numbers); the row
-- outlives the player, so a guild's numbers never go back. followed_until: until when (on the
-- app's clock) some process of the fleet has followers of the guild's player; written under
-- the guild's lock (version 6 / 3), so a change sees every follower that could miss it.
CREATE TABLE IF NOT EXISTS player_seqs (
    guild_id       TEXT PRIMARY KEY,
    seq            INTEGER NOT NULL,
    followed_until REAL
) WITHOUT ROWID;

-- A full-text index over the catalog's titles and authors.
CREATE VIRTUAL TABLE IF NOT EXISTS tracks_fts USING fts5 (
    title, author,
    content = 'tracks', content_rowid = 'track_id',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER IF NOT EXISTS tracks_fts_insert AFTER INSERT ON tracks BEGIN
    INSERT INTO tracks_fts (rowid, title, author) VALUES (new.track_id, new.title, new.author);
END;

CREATE TRIGGER IF NOT EXISTS tracks_fts_delete AFTER DELETE ON tracks BEGIN
    INSERT INTO tracks_fts (tracks_fts, rowid, title, author)
    VALUES ('delete', old.track_id, old.title, old.author);
END;

CREATE TRIGGER IF NOT EXISTS tracks_fts_update AFTER UPDATE ON tracks BEGIN
    INSERT INTO tracks_fts (tracks_fts, rowid, title, author)
    VALUES ('delete', old.track_id, old.title, old.author);
    INSERT INTO tracks_fts (rowid, title, author) VALUES (new.track_id, new.title, new.author);
END;

-- The ids of a running load, merged into its mapper only when the load ends well (done with
-- ok: true), so a failed load changes no mapper; merged in first-seen order (the rowid).
CREATE TABLE IF NOT EXISTS loader_ids (
    target_id TEXT NOT NULL,
    old_id    TEXT NOT NULL,
    new_id    TEXT NOT NULL,
    PRIMARY KEY (target_id, old_id)
);

-- commits: counted by every writing process, so each notices another's commits.

INSERT INTO counters (name, value)
VALUES ('event_seq', 0), ('pruned_seq', 0), ('player_seq', 0), ('commits', 0)
ON CONFLICT DO NOTHING;
