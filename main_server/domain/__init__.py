"""The main server's domain, one desk per concern: accounts (sessions), delivery (push and the
ledger), conversation (presence, read markers, typing), messages, groups, files, and notify
(who gets which event). Desks take plain arguments and return plain records
(main_server/storage/base.py); protobuf lives at the edges (servicer.py, wire.py)."""
