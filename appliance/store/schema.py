"""The memory file's schema, as an ordered list of migrations (PRAGMA user_version).

Migration N takes a file at version N-1 to version N inside one transaction. Never edit a
released migration: add the next one. tests/store/test_schema.py builds a file at every
earlier version and opens it with the current code.
"""

from __future__ import annotations

# Version 1: the foundation release. Kept verbatim so older files can be rebuilt in tests.
V1 = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('vector_dim', '{dim}');
CREATE TABLE memories(
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX memories_created ON memories(created_at);
CREATE VIRTUAL TABLE memory_vectors USING vec0(
    embedding float[{dim}] distance_metric=cosine
);
"""

# Version 2: three tiers, encryption, audit. Vectors move from vec0 to a plain table: vec0's
# point lookups (0.18 ms each) and bit KNN (49 ms at 100k) are too slow for exact rescoring;
# the binary index lives in RAM and is rebuilt from this table at open (docs/memory.md).
V2 = """
ALTER TABLE memories RENAME TO memories_v1;
DROP INDEX memories_created;
CREATE TABLE memories(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    text TEXT NOT NULL,
    sealed BLOB,
    kind TEXT NOT NULL CHECK (kind IN ('event', 'fact', 'conversation', 'document')),
    source TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    metadata TEXT NOT NULL DEFAULT '{{}}',
    importance REAL NOT NULL DEFAULT 0.5,
    created_at REAL NOT NULL,
    pinned INTEGER NOT NULL DEFAULT 0,
    sensitive INTEGER NOT NULL DEFAULT 0,
    forgotten_at REAL,
    document TEXT,
    chunk INTEGER
);
INSERT INTO memories(id, text, kind, source, metadata, created_at)
    SELECT id, text, CASE WHEN kind IN ('event', 'fact', 'conversation', 'document') THEN kind ELSE 'event' END,
           source, metadata, created_at FROM memories_v1;
DROP TABLE memories_v1;
CREATE INDEX memories_created ON memories(created_at);
CREATE INDEX memories_source ON memories(source, created_at);
CREATE INDEX memories_document ON memories(document) WHERE document IS NOT NULL;

CREATE TABLE memory_tags(tag TEXT NOT NULL, memory_id INTEGER NOT NULL, PRIMARY KEY (tag, memory_id)) WITHOUT ROWID;

CREATE TABLE vectors(id INTEGER PRIMARY KEY, embedding BLOB NOT NULL);
INSERT INTO vectors(id, embedding) SELECT rowid, embedding FROM memory_vectors;
DROP TABLE memory_vectors;

CREATE VIRTUAL TABLE memory_fts USING fts5(
    text, content='', contentless_delete=1, tokenize='unicode61 remove_diacritics 2'
);
INSERT INTO memory_fts(rowid, text) SELECT id, text FROM memories;
CREATE VIRTUAL TABLE memory_fts_terms USING fts5vocab(memory_fts, 'row');

CREATE TABLE ring(
    conversation TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    sealed BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (conversation, seq)
) WITHOUT ROWID;

CREATE TABLE zstd_dicts(id INTEGER PRIMARY KEY, created_at REAL NOT NULL, sealed BLOB NOT NULL);
CREATE TABLE archive_segments(
    id INTEGER PRIMARY KEY,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    count INTEGER NOT NULL,
    dict_id INTEGER REFERENCES zstd_dicts(id),
    raw_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    sealed BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE archive_index(
    memory_id INTEGER PRIMARY KEY,
    segment_id INTEGER NOT NULL REFERENCES archive_segments(id),
    created_at REAL NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL
);
CREATE INDEX archive_index_time ON archive_index(created_at);
CREATE INDEX archive_index_source ON archive_index(source, created_at);

CREATE TABLE audit(
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    action TEXT NOT NULL,
    timestamp REAL NOT NULL,
    ip_address TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

# Version 3: accounts. Users with scrypt password hashes and login lockout state; refresh
# tokens by family (a reused one revokes its family); device/app tokens; and an append-only
# feed of revocations the api follows, so a revoked token stops working within a second
# whichever process revoked it.
V3 = """
CREATE TABLE users(
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until REAL,
    last_login_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE refresh_tokens(
    jti TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    username TEXT NOT NULL,
    issued_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL,
    revoked_at REAL
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_family ON refresh_tokens(family);
CREATE TABLE app_tokens(
    jti TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    kid TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL
) WITHOUT ROWID;
CREATE TABLE revocations(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('token', 'user-disabled', 'user-enabled')),
    value TEXT NOT NULL,
    expires_at REAL,
    at REAL NOT NULL
);
"""

# Version 4: devices. The registry (one row per device: first/last seen, availability, counts,
# last payload), the keys that make a redelivered event a duplicate, the quarantine of what
# could not be an event (with a counter per reason), and the outbox of what goes upstream.
V4 = """
CREATE TABLE devices(
    id TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    online INTEGER,
    online_at REAL,
    event_count INTEGER NOT NULL DEFAULT 0,
    last_topic TEXT NOT NULL DEFAULT '',
    last_payload TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE event_keys(
    device TEXT NOT NULL,
    key TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (device, key)
) WITHOUT ROWID;
CREATE INDEX event_keys_at ON event_keys(at);
CREATE TABLE quarantine(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    topic TEXT NOT NULL,
    device TEXT,
    size INTEGER NOT NULL,
    sample TEXT NOT NULL
);
CREATE INDEX quarantine_device ON quarantine(device, id);
CREATE TABLE quarantine_counts(kind TEXT PRIMARY KEY, count INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE outbox(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL CHECK (target IN ('mqtt', 'webhook')),
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    delivered_at REAL
);
CREATE INDEX outbox_pending ON outbox(target, id) WHERE delivered_at IS NULL;
"""

# Version 5: tasks. The durable queue (one row per task: its spec as JSON, its state, result and
# attempts), each task's step log numbered from 1, and when each schedule last fired (for the
# runs missed while the box was off).
V5 = """
CREATE TABLE tasks(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_by TEXT NOT NULL,
    role TEXT NOT NULL,
    schedule TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    progress REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 1,
    not_before REAL NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT NOT NULL DEFAULT '',
    last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tasks_state ON tasks(state, not_before, id);
CREATE INDEX tasks_schedule ON tasks(schedule, id);
CREATE TABLE task_steps(
    task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    message TEXT NOT NULL,
    data TEXT,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;
CREATE TABLE schedule_marks(name TEXT PRIMARY KEY, last_fire REAL NOT NULL) WITHOUT ROWID;
"""

# Version 6: schedules saved through the commands (the file's are not stored): the body as its
# author wrote it (JSON) and the role its tasks run with.
V6 = """
CREATE TABLE schedules(
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    run_as TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
"""

# Version 7: who approved a task whose action needs approval (agent.actions.<name>.approval); a task
# approved once is not asked about again when a failed attempt is queued anew.
V7 = """
ALTER TABLE tasks ADD COLUMN approved_by TEXT;
"""

# Version 8: the inline-argv task kind is called shell (a "command" is a control command), and the
# owners of rows that have no owner column of their own: a chat conversation belongs to whoever
# began it, an uploaded document's path to whoever first uploaded it (control/owners.py).
V8 = """
UPDATE tasks SET kind = 'shell', spec = json_set(spec, '$.kind', 'shell') WHERE kind = 'command';
CREATE TABLE owners(
    resource TEXT NOT NULL,
    key TEXT NOT NULL,
    owner TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (resource, key)
) WITHOUT ROWID;
"""

# Version 9: the site as discovery describes it: entities (their announced config as JSON, their
# current state, attributes and availability) and each entity's state history.
V9 = """
CREATE TABLE entities(
    entity_id TEXT PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    component TEXT NOT NULL,
    name TEXT NOT NULL,
    area TEXT,
    device_id TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT,
    attributes TEXT NOT NULL DEFAULT '{{}}',
    state_at REAL,
    available INTEGER,
    state_problem TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE entity_history(
    entity_id TEXT NOT NULL,
    at REAL NOT NULL,
    state TEXT,
    attributes TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX entity_history_entity ON entity_history(entity_id, at);
CREATE INDEX entity_history_at ON entity_history(at);
"""

# Version 10: full-text search that cuts Chinese into characters and bigrams (store/words.py, the
# ``bilingual`` tokenizer every connection registers). The old index is dropped here and rebuilt
# in the background from the memories, resumably (store/textindex.py): a big file migrates in
# seconds and stays searchable while the index fills.
V10 = """
DROP TABLE memory_fts_terms;
DROP TABLE memory_fts;
CREATE VIRTUAL TABLE memory_fts USING fts5(
    text, content='', contentless_delete=1, tokenize='bilingual'
);
CREATE VIRTUAL TABLE memory_fts_terms USING fts5vocab(memory_fts, 'row');
INSERT INTO meta(key, value) SELECT 'fts_rebuild', json_object('next', 0, 'until', max(id)) FROM memories
    HAVING count(*) > 0;
"""

# Version 11: each device's live events in time order, so the per-device storage quota counts
# them and finds the oldest from the index alone (store/db.py, enforce_device_quota).
V11 = """
CREATE INDEX memories_device_events ON memories(source, created_at)
    WHERE kind = 'event' AND pinned = 0 AND forgotten_at IS NULL;
"""

# Version 12: a task's error and each step's words by code as well (appliance/phrases: JSON of
# {code, args}), so the page shows them in its reader's language; NULL where there are only words.
V12 = """
ALTER TABLE tasks ADD COLUMN error_phrase TEXT;
ALTER TABLE task_steps ADD COLUMN phrase TEXT;
"""

MIGRATIONS: tuple[str, ...] = (V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12)
SCHEMA_VERSION = len(MIGRATIONS)


def migration_sql(version: int, dim: int) -> str:
    """The SQL that takes a file to ``version``; only the validated integer dimension is formatted in."""
    return MIGRATIONS[version - 1].format(dim=int(dim)) + f"\nPRAGMA user_version = {int(version)};"
