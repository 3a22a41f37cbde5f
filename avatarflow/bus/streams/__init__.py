"""The Redis streams bus for distributed mode. Key layout and scripts: ``avatarflow.bus.keys``.

Each session has its own stream per topic, so one replica handles a session's messages in
order while the replicas of a stage (the consumer group ``<stage>-workers``) share sessions:
the replica that reads a session's entry on the topic's join stream owns the session. It keeps
that entry pending until the session ends and renews a liveness key (its lease) every
heartbeat; once the lease lapses, another replica takes the entry, the session's
unacknowledged messages and its saved state in one script, and continues where the dead one
stopped; a process restarted under the same name resumes its sessions at once. An owner reads
only while its lease holds, and outputs, acknowledgement and state are written by one script
that first checks ownership, so a replica presumed dead neither publishes twice nor swallows a
message its successor needed.

One module per role, composed by ``RedisBus`` (``bus``):

- ``producer``: the source side (open a session, publish, renew lifetimes, end it);
- ``consumer`` and ``queues``: reading, round robin between sessions, control before data,
  barge-in purge;
- ``commits``: the COMMIT script, a batch in one round trip;
- ``ownership``: joining, heartbeats, claiming a dead replica's sessions, handing them back;
- ``wire``: the fields of a stream entry; ``replica``: what the roles share;
- ``probe``: the machine's floor for one hop (bare redis-py), for the bus benchmark.
"""

from __future__ import annotations

from avatarflow.bus.streams.bus import RedisBus

__all__ = ["RedisBus"]
