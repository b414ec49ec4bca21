"""Builds and runs the main server: the chat service, health and reflection, graceful
shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from realmchat.metrics import serve_metrics
from realmchat.realmauth import DEFAULT_FILE, CredentialError, ensure_secret
from realmchat.rpc import server_options
from realmchat.runtime import until_stopped
from realmchat.tls import server_credentials

from .blobs import BlobStore
from .cluster import Cluster
from .config import MainConfig
from .dburl import parse_db_url
from .diskguard import guard
from .hub import Hub
from .passwords import PasswordHasher
from .service import ChatService
from .servicer import SERVICE_NAME, ChatServicer, add_to_server
from .storage import open_storage
from .storage.walcheck import WalLost

log = logging.getLogger("main_server")
CHAT_SERVICE = SERVICE_NAME


async def sweep_files(service: ChatService, every_s: float) -> None:
    """At start, then every every_s: the file store keeps only what files refer to."""
    while True:
        try:
            if n := await service.files.sweep_files(time.time()):
                log.info("removed %d stored file contents no file refers to", n)
        except Exception:  # a sweep that fails is tried again next time; serving goes on
            log.exception("sweeping the file store failed")
        await asyncio.sleep(every_s)


async def serve(config: MainConfig) -> None:
    # Data is the owner's only: the data dir 0700, every file main creates 0600.
    os.umask(0o077)
    config.data_dir.mkdir(parents=True, exist_ok=True)  # also with PostgreSQL: the disk guard watches it
    os.chmod(config.data_dir, 0o700)
    db = parse_db_url(config.db, config.data_dir)
    storage = open_storage(db, config.data_dir, config.sqlite_synchronous, config.allow_wal_loss)
    try:
        await storage.open()
    except WalLost as exc:
        log.error("refusing to start: %s", exc)
        raise SystemExit(f"main_server: refusing to start: {exc}") from None
    hub = Hub(config.channel_max_queue)
    hasher = PasswordHasher(config.argon2_time_cost, config.argon2_memory_kib,
                            concurrency=config.hash_concurrency, max_queue=config.hash_queue)
    # Disk space is a limit: new data is refused with RESOURCE_EXHAUSTED before the disk is full.
    files_dir = Path(config.files_dir) if config.files_dir else config.data_dir / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(files_dir, 0o700)
    guarded_storage, blobs = guard(storage, BlobStore(files_dir), config.data_dir, config.min_free_bytes)
    service = ChatService(config, guarded_storage, hub, hasher, blobs)
    try:
        realm_secret = ensure_secret(Path(config.realm_secret_file) if config.realm_secret_file
                                     else config.data_dir / DEFAULT_FILE)
    except CredentialError as exc:
        raise SystemExit(f"main_server: {exc}") from None
    servicer = ChatServicer(service, realm_secret)
    cluster = None
    if db.is_postgres:
        # Replicas on one database: events and presence cross between them by LISTEN/NOTIFY.
        cluster = Cluster(db.dsn, hub.local_presence)
        await cluster.start(service.on_notice, service.delivery.push_all_pending)
        service.cluster = cluster
        hub.observer = cluster

    server = grpc.aio.server(options=server_options(config.keepalive_time_s, config.keepalive_timeout_s))
    add_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (CHAT_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server)
    if config.tls_cert:
        port = server.add_secure_port(f"{config.host}:{config.port}",
                                      server_credentials(config.tls_cert, config.tls_key, config.tls_ca))
    else:
        port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise SystemExit(f"main_server: cannot listen on {config.host}:{config.port}")
    await server.start()
    for name in ("", CHAT_SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    print(f"main_server listening on {config.host}:{port}", flush=True)
    if config.metrics_port >= 0:
        serve_metrics(config.host, config.metrics_port, "main_server")
    log.info("data in %s", config.data_dir)

    sweeper = asyncio.create_task(sweep_files(service, config.file_sweep_s)) if config.file_sweep_s > 0 else None

    await until_stopped()

    log.info("shutting down")
    if sweeper is not None:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
    await health_servicer.enter_graceful_shutdown()
    # End the event streams cleanly (realms see the end and reconnect elsewhere or later),
    # then let in-flight calls finish.
    for channel in list(hub.channels.values()):
        channel.close()
    await server.stop(config.grace_s)
    await servicer.wait_tasks()
    if cluster is not None:
        await cluster.close()
    await storage.close()
    log.info("stopped")
