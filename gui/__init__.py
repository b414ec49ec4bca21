"""realmchat's Flet GUI: a controller layer (plain Python, testable without Flet) over the
chat_cli library, and view classes over Flet controls with the controller injected."""
