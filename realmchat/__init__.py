"""Code shared by main_server, realm_server, chat_cli and gui: reply codes, typed errors,
name rules, the text-protocol codec and framing, and config helpers."""
