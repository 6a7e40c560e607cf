"""The small wrapper over pika that the lesson scripts share.

broker.py is the lesson: pika's own calls (confirm_delivery, queue_declare, basic_publish,
basic_qos, basic_consume, basic_ack) in one short file. staying_up.py keeps a worker working
through any loss; pipelined.py sends many messages at once, each confirmed. connection.py,
queues.py, delivery.py and cli.py are where the broker is, which queues the lessons use, how a
worker settles a message, and what every script takes on its command line.
"""
