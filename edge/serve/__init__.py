"""``edge-serve``: the live loop as a local WebSocket service with a kiosk page (protocol: ``docs/protocol.md``).

Modules: :mod:`~edge.serve.protocol` (framing, limits, validation, messages), :mod:`~edge.serve.schema` (the JSON
Schemas), :mod:`~edge.serve.auth` (token, binding, origin), :mod:`~edge.serve.resources` (the shared models),
:mod:`~edge.serve.session` (one ``/v1/stream`` connection), :mod:`~edge.serve.outbox` (bounded send queues),
:mod:`~edge.serve.estimates` (``/v1/estimates``), :mod:`~edge.serve.record` (``--record``), :mod:`~edge.serve.app`
(the server).  Run path: never imports torch.
"""
