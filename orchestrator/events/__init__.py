"""Plain events out: every envelope a step produces, and every dead letter, for any subscriber.

A service that is not Celery (the design's orchestrator core in another language, a monitor)
follows the pipeline by subscribing with its broker's own client: where the events go is
:mod:`.destinations`, what they carry is :mod:`.cloudevents`, how and with what guarantee a
worker publishes them is :mod:`.publisher`.
"""
