"""Past one process: the graph run by workers, in this process or as Ray actors (issue 16).

A `WorkerConfig` (picklable: routing, settings, store URL, endpoint, limits) is all a
worker needs; each `GraphWorker` builds its own graph, chat model clients and store
from it in its constructor, because a compiled graph cannot be pickled
(langgraph#3289), and runs them on an event loop of its own. An engine runs workers:
`LocalEngine` one, in this process; `RayEngine` N, one Ray actor (process) each, on
a local Ray runtime or a cluster. Both take the same calls, so a run gives the same
rankings on either. `batch` is the driver of `m3rec recommend-batch`.
"""
