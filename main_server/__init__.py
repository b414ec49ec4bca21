"""realmchat main server: the one source of truth (gRPC, package chat.v1)."""
