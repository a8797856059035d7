-- Record who changed what, even through a shared backend account.
--
-- pgporter tags every server session with the person behind it, in the custom settings
-- pgporter.client_user and pgporter.client_addr (names: identity_guc / identity_addr_guc).
-- A trigger reads them with current_setting(name, true), which returns NULL (not an error)
-- on a session that did not come through pgporter.
--
-- Run this as the table owner directly on PostgreSQL, not through pgporter: pgporter refuses
-- statements that name the identity settings (42501) unless the user is in admin_users.
--
-- Hardening: the function calls pg_catalog.current_setting by its full name and runs with the
-- search_path it was created with, so a client cannot shadow either with objects of its own.
-- For a record the shared account cannot rewrite, create change_log and the function as
-- another role (e.g. audit_owner), make the function SECURITY DEFINER, and grant the shared
-- account nothing on change_log: the trigger still writes it, the clients cannot.

CREATE TABLE IF NOT EXISTS change_log (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    table_name  text        NOT NULL,
    operation   text        NOT NULL,
    client_user text,                                   -- the person (pgporter's tag)
    client_addr text,                                   -- where they connected from
    db_user     text        NOT NULL DEFAULT current_user, -- the (shared) backend account
    backend_pid int         NOT NULL DEFAULT pg_backend_pid(), -- joins pgporter's audit log
    row_data    jsonb
);

CREATE OR REPLACE FUNCTION record_client_identity() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO change_log (table_name, operation, client_user, client_addr, row_data)
    VALUES (TG_TABLE_NAME, TG_OP,
            pg_catalog.current_setting('pgporter.client_user', true),
            pg_catalog.current_setting('pgporter.client_addr', true),
            pg_catalog.to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END));
    RETURN NULL;
END
$$;

-- An example table; attach the same trigger to every table you want attributed.
CREATE TABLE IF NOT EXISTS datasets (
    id   serial PRIMARY KEY,
    name text   NOT NULL
);

DROP TRIGGER IF EXISTS datasets_identity ON datasets;
CREATE TRIGGER datasets_identity
    AFTER INSERT OR UPDATE OR DELETE ON datasets
    FOR EACH ROW EXECUTE FUNCTION record_client_identity();
