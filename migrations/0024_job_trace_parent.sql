-- The W3C `traceparent` an event arrived with (an AMQP header or an HTTP header), in its
-- version-00 form, validated by mailboxd before it is stored; NULL when none came or it was
-- refused. Its outcome carries it back.
--
-- Expand only: a nullable column without a default, added without rewriting the table.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS trace_parent text;
