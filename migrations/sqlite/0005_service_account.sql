-- Deploying as a service account (issue 15).
-- `service_account`: `namespace/name` or a bare `name` (the source's
-- namespace), as the user gave it; NULL takes the service's default
-- (CHUMP_DEFAULT_SERVICE_ACCOUNT), else chump's own identity.
ALTER TABLE sources ADD COLUMN service_account TEXT;
