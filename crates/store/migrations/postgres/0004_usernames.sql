-- Usernames are case-insensitive from this version on: the server folds every username it is
-- given to lowercase (`Username::parse`), so `Dave` and `dave` are one user. The usernames
-- stored before are folded here. Where two users of one account differ only in case (possible
-- before), the one already in lowercase, else the oldest, keeps the name and each other one is
-- renamed `name.N` (N = 2, 3...); every rename is listed in `username_renames`. Reserved names
-- in license terms are folded when the terms are read.
CREATE TABLE username_renames (
    account_id TEXT NOT NULL,
    old_name   TEXT NOT NULL,
    new_name   TEXT NOT NULL,
    PRIMARY KEY (account_id, old_name)
);

INSERT INTO username_renames (account_id, old_name, new_name)
SELECT account_id, username,
       CASE WHEN rn = 1 THEN lower(username) ELSE lower(username) || '.' || rn END
FROM (
    SELECT account_id, username,
           row_number() OVER (
               PARTITION BY account_id, lower(username)
               ORDER BY username = lower(username) DESC, created_at, username
           ) AS rn
    FROM users
) AS ranked
WHERE username <> lower(username);

UPDATE users SET username = (
    SELECT r.new_name FROM username_renames r
    WHERE r.account_id = users.account_id AND r.old_name = users.username)
WHERE EXISTS (
    SELECT 1 FROM username_renames r
    WHERE r.account_id = users.account_id AND r.old_name = users.username);

UPDATE credentials SET username = (
    SELECT r.new_name FROM username_renames r
    WHERE r.account_id = credentials.account_id AND r.old_name = credentials.username)
WHERE EXISTS (
    SELECT 1 FROM username_renames r
    WHERE r.account_id = credentials.account_id AND r.old_name = credentials.username);

UPDATE audit_events SET username = (
    SELECT r.new_name FROM username_renames r
    WHERE r.account_id = audit_events.account_id AND r.old_name = audit_events.username)
WHERE username <> lower(username) AND EXISTS (
    SELECT 1 FROM username_renames r
    WHERE r.account_id = audit_events.account_id AND r.old_name = audit_events.username);

UPDATE sessions SET username = (
    SELECT r.new_name FROM username_renames r JOIN licenses l ON l.account_id = r.account_id
    WHERE l.id = sessions.license_id AND r.old_name = sessions.username)
WHERE username <> lower(username) AND EXISTS (
    SELECT 1 FROM username_renames r JOIN licenses l ON l.account_id = r.account_id
    WHERE l.id = sessions.license_id AND r.old_name = sessions.username);

UPDATE license_users SET username = (
    SELECT r.new_name FROM username_renames r JOIN licenses l ON l.account_id = r.account_id
    WHERE l.id = license_users.license_id AND r.old_name = license_users.username)
WHERE username <> lower(username) AND EXISTS (
    SELECT 1 FROM username_renames r JOIN licenses l ON l.account_id = r.account_id
    WHERE l.id = license_users.license_id AND r.old_name = license_users.username);

UPDATE queue_entries SET username = (
    SELECT r.new_name FROM username_renames r JOIN licenses l ON l.account_id = r.account_id
    WHERE l.id = queue_entries.license_id AND r.old_name = queue_entries.username)
WHERE username <> lower(username) AND EXISTS (
    SELECT 1 FROM username_renames r JOIN licenses l ON l.account_id = r.account_id
    WHERE l.id = queue_entries.license_id AND r.old_name = queue_entries.username);
