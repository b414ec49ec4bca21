"""Generated gRPC code for chat.v1 (built by build_proto.sh, not committed)."""
