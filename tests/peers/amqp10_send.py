"""An AMQP 1.0 client, as midPoint's JMS path over AMQP 1.0 is (issue 34): Apache Qpid Proton
sends one text message per file through RabbitMQ's AMQP 1.0 plugin to an exchange with a
routing key, as a JMS TextMessage travels (the text in an amqp-value section, a durable
header, the JMS message id in the properties' message-id), and waits for the broker to accept
each (settled, accepted: RabbitMQ has routed and stored it).

usage: amqp10_send.py HOST PORT EXCHANGE ROUTING_KEY MESSAGE_ID=FILE...
The broker's user and password come from AMQP_USER and AMQP_PASSWORD.
"""
import os
import sys

from proton import Message
from proton.utils import BlockingConnection


def main():
    host, port, exchange, key = sys.argv[1:5]
    url = f"amqp://{host}:{port}"
    conn = BlockingConnection(
        url,
        user=os.environ["AMQP_USER"],
        password=os.environ["AMQP_PASSWORD"],
        allowed_mechs="PLAIN",
        timeout=30,
    )
    try:
        # RabbitMQ 3.x's AMQP 1.0 plugin: /exchange/NAME/ROUTING-KEY.
        sender = conn.create_sender(f"/exchange/{exchange}/{key}")
        for spec in sys.argv[5:]:
            message_id, path = spec.split("=", 1)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            sender.send(Message(id=message_id, body=text, durable=True))
            print(f"ok {message_id}")
    finally:
        conn.close()


if __name__ == "__main__":
    main()
