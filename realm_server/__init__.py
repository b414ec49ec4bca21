"""realmchat realm server: text-protocol clients on TCP, translated to gRPC calls to main."""
