-- The request a claim took (`requested_trigger` before the claim cleared
-- it), so that a claim is one `UPDATE … RETURNING` statement: RETURNING
-- sees the updated row, and this keeps what the update cleared. Written
-- and read only by the claim.
ALTER TABLE source_status ADD COLUMN claimed_trigger TEXT;
