-- An event's AMQP reply_to that mailboxd would not send to (not a queue an RPC client
-- names, or one of mailboxd's own): the event is processed, the outcome goes only to the
-- outcome exchange, and this says which reply_to was dropped and why.
ALTER TABLE jobs ADD COLUMN reply_to_refused text;
