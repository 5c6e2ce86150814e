-- What a circuit alert is about (issue 30): the WinRM endpoint and which of its pair it is,
-- so an outage's "unavailable" and "available again" alerts are paired on those two columns,
-- never on their subject text. Expand only: other alerts leave both empty. Rows written
-- before this migration are filled in from the subjects they were paired by until now.
ALTER TABLE alerts
    ADD COLUMN circuit_endpoint text,
    ADD COLUMN circuit_change   text CHECK (circuit_change IN ('opened', 'closed')),
    ADD CONSTRAINT alerts_circuit_pair CHECK ((circuit_endpoint IS NULL) = (circuit_change IS NULL));

UPDATE alerts
   SET circuit_endpoint = substring(subject FROM '^\[mailboxd\] Windows host (.*) unavailable: mailbox jobs paused$'),
       circuit_change = 'opened'
 WHERE subject ~ '^\[mailboxd\] Windows host .* unavailable: mailbox jobs paused$';
UPDATE alerts
   SET circuit_endpoint = substring(subject FROM '^\[mailboxd\] Windows host (.*) available again: mailbox jobs resumed$'),
       circuit_change = 'closed'
 WHERE subject ~ '^\[mailboxd\] Windows host .* available again: mailbox jobs resumed$';

CREATE INDEX alerts_circuit ON alerts (circuit_endpoint, id) WHERE circuit_endpoint IS NOT NULL;
