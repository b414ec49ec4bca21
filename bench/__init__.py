"""realmchat benchmark (issue 5): starts a real stack (main with its SQLite storage, two realms)
and drives it with a multi-process asyncio load generator that speaks the realm text protocol.

`python -m bench --help` lists the workloads and their knobs; docs/PERFORMANCE.md has the figures.
"""
