-- plain SQL migration, run with: psql -v ON_ERROR_STOP=1 -f sql/audit.sql
CREATE TABLE IF NOT EXISTS audit_log (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), what text);
