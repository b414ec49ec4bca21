"""Remembered connect-screen values (realm host, port, last user name; never the password).

Stored with Flet's SharedPreferences service: in the browser that is the browser's local
storage (so each person using the web app gets their own), on the desktop the platform's
preferences store. If the service is unavailable the values live for the session only.
"""

from __future__ import annotations

import logging
from typing import Any

import flet as ft

log = logging.getLogger("gui.prefs")

PREFIX = "realmchat."


class Prefs:
    def __init__(self) -> None:
        # Constructed inside the page's context, the service registers itself with the page.
        # The page keeps services only while something references them: this object does.
        self._service: ft.SharedPreferences | None = ft.SharedPreferences()
        self._memory: dict[str, Any] = {}

    async def get(self, key: str, default: Any = None) -> Any:
        if key in self._memory:
            return self._memory[key]
        if self._service is not None:
            try:
                value = await self._service.get(PREFIX + key)
            except Exception as e:  # the client may lack the plugin (old desktop client)
                log.info("preferences unavailable: %s", e)
                self._service = None
            else:
                if value is not None:
                    self._memory[key] = value
                    return value
        return default

    async def set(self, key: str, value: str | int) -> None:
        self._memory[key] = value
        if self._service is not None:
            try:
                await self._service.set(PREFIX + key, value)
            except Exception as e:
                log.info("could not save preference %s: %s", key, e)
