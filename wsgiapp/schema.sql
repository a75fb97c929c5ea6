-- The one table. Created idempotently by `python -m wsgiapp initdb`.
-- utf8mb4 so that Chinese names and emoji round-trip; utf8mb4_bin so that names are
-- unique byte for byte (a _ci collation would make 'Alice' and 'alice', or two emoji, collide).
CREATE TABLE IF NOT EXISTS vc_admin (
    id         INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name       VARCHAR(64)  NOT NULL,
    email      VARCHAR(254) NOT NULL,
    created_at TIMESTAMP    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE KEY vc_admin_name (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- POST /api/admins with an Idempotency-Key header: the key and the answer it produced,
-- written in the same transaction as the row, so a retry gets that answer again and never
-- a second row. Kept at least 24 hours (older ones are purged as new ones come in).
CREATE TABLE IF NOT EXISTS idempotency_key (
    idem_key    VARBINARY(255)    NOT NULL PRIMARY KEY,
    fingerprint BINARY(32)        NOT NULL,
    status      SMALLINT UNSIGNED NOT NULL,
    body        TEXT              NOT NULL,
    location    VARCHAR(64)       NOT NULL,
    created_at  TIMESTAMP         NOT NULL DEFAULT CURRENT_TIMESTAMP,
    KEY idempotency_key_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Wrong bearer tokens per client address and window (a minute: unix time // 60), one count
-- for every process and host (http.FailedTokens, docs/security.rst). Written only when a
-- token is wrong; rows of past windows are deleted as new ones start.
CREATE TABLE IF NOT EXISTS failed_token (
    address     VARBINARY(64)     NOT NULL,
    time_window INT UNSIGNED      NOT NULL,
    failures    INT UNSIGNED      NOT NULL,
    PRIMARY KEY (address, time_window),
    KEY failed_token_window (time_window)
) ENGINE = InnoDB;
