"""The sending side: Dramatiq actors that turn a `queued` job into a vendor call.

sender.py      what the `send_broadcast` actor does with one job id
app.py         one worker process: broker, actor, Dramatiq Worker
supervisor.py  `broadcaster worker` (N processes) and `broadcaster run`
"""
