"""The workloads (1-7: messaging, idle, files, logins; 8: presence; 9: search; 10: private
messages on a machine whose cores are taken by busy loops), and the IRC peer's equivalents of 1, 3,
5 and 10 (`--peer ngircd`, bench.peer). Each one adds rows to the Bench; the goals are
carried in the rows so that the table and docs/PERFORMANCE.md show goal and figure side by side."""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.stack import start_main

from . import worker as wk
from .peer import close_irc_clients, irc_clients
from .runner import Bench, Row, grid, log, percentiles

# A message's target is on the other realm: client i talks to client i^1, and even clients live
# on alpha, odd ones on beta (with two generator processes, sender and recipient of every
# message are also in different processes).


def realm_of(i: int) -> str:
    return "alpha" if i % 2 == 0 else "beta"


def private_clients(b: Bench, n: int, prefix: str = "p") -> list[int]:
    n -= n % 2
    users = [(f"{prefix}{i}", realm_of(i)) for i in range(n)]
    t0 = time.perf_counter()
    cids, _ = b.add_clients(users)
    log(f"{n} clients registered and logged in ({n / (time.perf_counter() - t0):.0f}/s, cheap hash)")
    base = cids[0]
    b.set_prefixes({c: f"sendprivate {users[(c - base) ^ 1][0]} " for c in cids})
    return cids


def ensure_private(b: Bench) -> list[int]:
    """Workloads 1-3 share one stack and one set of logged-in clients."""
    if b.stack_key != "private":
        b.use_stack("private")
        b.private_cids = private_clients(b, b.args.clients)
    return b.private_cids


def warmup(b: Bench, senders: list[int], fanout: int, rate: float) -> None:
    if b.args.warmup > 0:
        res = b.run_phase(senders, fanout, b.args.warmup, rate=rate)
        if res.lost:
            b.row("-", "warmup", f"{rate:.0f}/s", res)


def w1(b: Bench) -> None:
    cids = ensure_private(b)
    rate = b.args.rate1
    warmup(b, cids, 1, rate)
    res = b.run_phase(cids, 1, b.args.duration, rate=rate)
    r = b.row("1", "private fixed", f"{rate:.0f}/s, {len(cids)} clients", res, goal="p50 <= 2 ms, p99 <= 10 ms")
    r.extra["compare"] = "1"


def w2(b: Bench) -> None:
    cids = ensure_private(b)
    rate = b.args.rate2
    warmup(b, cids, 1, min(rate, b.args.rate1))
    res = b.run_phase(cids, 1, b.args.duration, rate=rate)
    keeps_up = res.rate >= 0.97 * rate and res.drain_s < 1.0 and res.errors == 0 and res.unacked == 0
    r = b.row("2", "private fixed", f"{rate:.0f}/s, {len(cids)} clients", res,
              goal="keeps up, p99 <= 30 ms")
    r.extra["keeps_up"] = keeps_up


def w3(b: Bench) -> None:
    cids = ensure_private(b)
    res = b.run_phase(cids, 1, b.args.full_duration, depth=b.args.depth, profile_tag="w3-private-max")
    r = b.row("3", "private max", f"closed, {len(cids)}x{b.args.depth} in flight", res,
              goal=">= 20,000 msg/s, every one committed before OK")
    r.extra["compare"] = "3"


def w4(b: Bench) -> None:
    b.use_stack("group")
    g, m = b.args.groups, b.args.group_size
    users = [(f"g{i}", realm_of(i)) for i in range(g * m)]
    cids, _ = b.add_clients(users)
    base = cids[0]
    b.commands([(base + gi * m, f"creategroup grp{gi}") for gi in range(g)])
    b.commands([(base + gi * m + j, f"joingroup grp{gi}") for gi in range(g) for j in range(1, m)])
    b.set_prefixes({c: f"sendgroup grp{(c - base) // m} " for c in cids})
    fanout = m - 1  # every member but the sender (one session per member)
    rate = b.args.group_rate
    warmup(b, cids, fanout, rate)
    res = b.run_phase(cids, fanout, b.args.duration, rate=rate)
    r = b.row("4", "group fixed", f"{rate:.0f} sends/s, {g}x{m}", res,
              goal=f"{rate * fanout:,.0f} deliveries/s at p99 <= 30 ms")
    r.extra["sends_per_s"] = res.acked / b.args.duration
    res = b.run_phase(cids, fanout, b.args.full_duration, depth=1, profile_tag="w4-group-max")
    r = b.row("4", "group max", f"closed, {g}x{m}, 1 in flight", res, goal=">= 150,000 deliveries/s")
    r.extra["sends_per_s"] = res.acked / b.args.full_duration


def w5(b: Bench) -> None:
    b.use_stack("idle")
    active = private_clients(b, b.args.active_clients, prefix="a")
    rate = b.args.active_rate
    warmup(b, active, 1, rate)
    res = b.run_phase(active, 1, b.args.duration, rate=rate)
    b.row("5", "active, no idle", f"{rate:.0f}/s, {len(active)} clients", res, goal="baseline")
    rss0 = b.meter.rss_mb()
    t0 = time.perf_counter()
    b.add_clients([(f"i{i}", "alpha") for i in range(b.args.idle)])
    log(f"{b.args.idle} idle clients logged in on alpha in {time.perf_counter() - t0:.1f} s")
    time.sleep(2)  # let allocator and gRPC settle before reading RSS
    rss1 = b.meter.rss_mb()
    res = b.run_phase(active, 1, b.args.duration, rate=rate)
    r = b.row("5", f"active + {b.args.idle} idle", f"{rate:.0f}/s, idle on alpha", res,
              goal="alpha RSS <= 100 MB, main <= 150 MB, latency unchanged")
    r.extra["rss_before_idle_mb"] = {k: round(v, 1) for k, v in rss0.items()}
    r.extra["rss_with_idle_mb"] = {k: round(v, 1) for k, v in rss1.items()}
    r.extra["kib_per_idle_connection"] = {
        k: round((rss1[k] - rss0.get(k, 0.0)) * 1024 / max(b.args.idle, 1), 2) for k in ("main", "alpha", "gen")}
    r.extra["compare"] = "5"


def w6(b: Bench) -> None:
    stack = b.use_stack("file")
    size = int(b.args.file_mib * (1 << 20))
    ops: list[dict[str, Any] | None] = [None] * b.workers.n
    for name, user, realm in (("up", "fup", "alpha"), ("down", "fdown", "beta")):
        host, port = stack.realm(realm)
        ops[0] = {"op": "file_login", "name": name, "host": host, "port": port, "user": user}
        b.workers.call(ops)
    b.wait_quiet()
    win = b.meter.start()
    ops[0] = {"op": "file_up", "name": "up", "to": "fdown", "size": size}
    up = b.workers.call(ops)[0]
    w = win.stop()
    mb = size / 1e6
    r = b.row("6", f"file up {b.args.file_mib:g} MiB", "alpha -> main", window=w, rate=mb / up["seconds"],
              unit="MB/s", goal=">= 150 MB/s, RSS growth <= 50 MiB")
    r.extra["rss_growth_mib"] = {k: round(w.peak_rss_mb.get(k, 0) - w.start_rss_mb.get(k, 0), 1)
                                 for k in w.start_rss_mb}
    b.wait_quiet()
    win = b.meter.start()
    ops[0] = {"op": "file_down", "name": "down", "file_id": up["id"], "sha256": up["sha256"]}
    down = b.workers.call(ops)[0]
    w = win.stop()
    r = b.row("6", f"file down {b.args.file_mib:g} MiB", "main -> beta", window=w, rate=mb / down["seconds"],
              unit="MB/s", goal=">= 150 MB/s, RSS growth <= 50 MiB")
    r.extra["rss_growth_mib"] = {k: round(w.peak_rss_mb.get(k, 0) - w.start_rss_mb.get(k, 0), 1)
                                 for k in w.start_rss_mb}


def w7(b: Bench) -> None:
    stack = b.use_stack("login", production_hash=True)
    n = b.args.logins
    users = [(f"l{i}", realm_of(i)) for i in range(n)]
    # Waiting for a quiet machine happens before connecting: a realm closes connections that do
    # not log in within its login timeout (60 s by default).
    b.wait_quiet()
    cids, _ = b.add_clients(users, steps=())
    for verb in ("register", "auth"):
        win = b.meter.start()
        res = b.login(cids, (verb,), concurrency=8)
        w = win.stop()
        seconds = max(r[f"{verb}_s"] for r in res)
        b.row("7", verb, f"{n} users, production argon2id", window=w, rate=n / seconds, unit="/s",
              goal="report logins/s")
    # A main restart must not send everyone through the hash again: kill -9 main, restart it, and
    # time until every session can send and receive again without a new auth.
    base = cids[0]
    b.set_prefixes({c: f"sendprivate {users[(c - base) ^ 1][0]} " for c in cids})
    linked = {name: _links(p.log()) for name, p in stack.realms.items()}
    t0 = time.perf_counter()
    stack.restart_main(kill=True)
    b.set_server_pids()
    deadline = time.monotonic() + 60
    # Resumed = both realms re-linked (their Link call carries every session token) and every
    # session answers a command that needs it, without any auth.
    while any(_links(p.log()) <= linked[name] for name, p in stack.realms.items()):
        if time.monotonic() > deadline:
            raise RuntimeError("the realms did not re-link to the restarted main within 60 s")
        time.sleep(0.01)
    b.commands([(c, "who") for c in cids])
    resumed_s = time.perf_counter() - t0
    res_phase = b.run_phase(cids, 1, 1.0, rate=max(n, 1))  # push works again for every session
    r = b.row("7", "resume after main kill -9", f"{n} sessions, no re-login", res_phase,
              rate=resumed_s, unit="s", goal="sessions resume by token")
    r.extra["resume_seconds"] = round(resumed_s, 3)


def _links(log_text: str) -> int:
    return log_text.count("linked to main")


def _presence_received(b: Bench) -> int:
    return sum(r["n"] for r in b.workers.all("presence_count"))


def w8(b: Bench) -> None:
    """Presence at scale: users in groups (each user in one group of --presence-group), all
    logged in; some of them log out and back in over and over. Every change goes to the online
    members of the user's group (who shares a conversation), coalesced per user to one a
    second: the cost grows with group size, not with the number of users on the server."""
    b.use_stack("presence")
    size = b.args.presence_group
    n = b.args.presence_users - b.args.presence_users % size
    users = [(f"u{i}", realm_of(i)) for i in range(n)]
    t0 = time.perf_counter()
    cids, _ = b.add_clients(users)
    log(f"{n} users registered and logged in ({n / (time.perf_counter() - t0):.0f}/s)")
    base = cids[0]
    groups = n // size
    t0 = time.perf_counter()
    b.commands([(base + gi * size, f"creategroup pg{gi}") for gi in range(groups)])
    b.commands([(base + gi * size + j, f"joingroup pg{gi}") for gi in range(groups) for j in range(1, size)])
    log(f"{groups} groups of {size} joined in {time.perf_counter() - t0:.1f} s")
    churn = max(1, min(b.args.presence_churn, n))
    churners = cids[:: max(1, n // churn)][:churn]
    per: list[list[int]] = [[] for _ in range(b.workers.n)]
    for cid in churners:
        per[b.worker_of(cid)].append(cid)
    duration = b.args.full_duration
    for name, hold in (("churn", b.args.presence_hold), ("flap", 0.0)):
        time.sleep(1.5)  # earlier coalesced changes have gone out
        b.wait_quiet()
        before = _presence_received(b)
        win = b.meter.start()
        res = b.workers.call([{"op": "churn", "cids": p, "duration_s": duration, "hold_s": hold} for p in per])
        time.sleep(OFFLINE_SETTLE_S)  # the last (held back) changes arrive
        w = win.stop()
        errors = sum(r["errors"] for r in res)
        if errors:
            samples = [e for r in res for e in r["error_samples"]][:3]
            raise RuntimeError(f"{errors} logins/logouts failed, e.g. {samples}")
        events = _presence_received(b) - before
        cycles = sum(r["cycles"] for r in res)
        what = "log out, wait, log in, wait" if hold else "log out and in back to back"
        if hold:
            r = b.row("8", f"presence {name}", f"{n} users, groups of {size}, {churn} {what}", window=w,
                      rate=events / w.seconds, unit="events/s",
                      goal="cost grows with group size, not with users")
        else:  # what counts here is how few events the flapping makes: the rate is of cycles
            r = b.row("8", f"presence {name}", f"{n} users, groups of {size}, {churn} {what}", window=w,
                      rate=cycles / w.seconds, unit="cycles/s", goal="coalesced: ~0 events per cycle")
        r.extra.update({
            "users": n, "group_size": size, "churning_users": churn, "hold_s": hold, "logout_login_cycles": cycles,
            "presence_events": events, "events_per_cycle": round(events / max(cycles, 1), 1),
            "cycles_per_s": round(cycles / w.seconds, 1),
        })
        cpu_s = {k: v / 100 * w.seconds for k, v in w.cpu_pct.items() if k != "other"}
        if events:
            r.extra["cpu_us_per_presence_event"] = {k: round(v / events * 1e6, 1) for k, v in cpu_s.items()}


OFFLINE_SETTLE_S = 2.5  # > the offline grace plus the coalescing interval


# ---- 9: search ----------------------------------------------------------------------------------

VOCAB = 20_000  # words w0..w19999, drawn with weight 1/(rank+1): a few very common, a long tail
WORDS_PER_MESSAGE = 8
GROUPS_PER_SEARCHER = 5
LOAD_BATCH = 50_000


def vocab_weights() -> tuple[list[str], list[float]]:
    words = [f"w{i}" for i in range(VOCAB)]
    cum: list[float] = []
    total = 0.0
    for i in range(VOCAB):
        total += 1 / (i + 1)
        cum.append(total)
    return words, cum


def _storage(db: Path, dsn: str) -> Any:
    """Main's storage, opened by the bench itself while main is stopped."""
    if dsn:
        from main_server.storage.postgres import PostgresStorage

        return PostgresStorage(dsn)
    from main_server.storage.sqlite import SQLiteStorage

    return SQLiteStorage(db, synchronous="OFF")


async def _load(db: Path, dsn: str, n: int, users: int, groups: int, rnd: random.Random) -> None:
    """n messages straight into main's database (main stopped), in big batches: 70 % in the
    groups sg*, 30 % private between two of the users s*; 8 words each from the skewed
    vocabulary. PostgreSQL then gathers the new rows' statistics, as autovacuum would."""
    storage = _storage(db, dsn)
    await storage.open()
    try:
        words, cum = vocab_weights()
        ts = "2026-12-01T00:00:00.000Z"
        for start in range(0, n, LOAD_BATCH):
            k = min(LOAD_BATCH, n - start)
            drawn = rnd.choices(words, cum_weights=cum, k=k * WORDS_PER_MESSAGE)
            rows = []
            for i in range(k):
                text = " ".join(drawn[i * WORDS_PER_MESSAGE:(i + 1) * WORDS_PER_MESSAGE])
                sender = f"s{rnd.randrange(users)}"
                if rnd.random() < 0.3:
                    to = f"s{rnd.randrange(users)}"
                    rows.append((sender, sender, to, to, "", "", text, ts))
                else:
                    g = f"sg{rnd.randrange(groups)}"
                    rows.append((sender, sender, "", "", g, g, text, ts))
            await storage.bulk_load(rows)
    finally:
        await storage.close()
    if dsn:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("VACUUM ANALYZE messages")
        finally:
            await conn.close()


def search_queries(rnd: random.Random, n: int, searchers: list[int], users: int,
                   groups_of: dict[int, list[int]]) -> list[tuple[int, str]]:
    """1-3 words, half drawn like the messages' words (common words: many matches), half
    uniformly from the 2,000 most common; 70 % over everything the searcher may read, 20 % in
    one of their groups, 10 % in a private conversation."""
    words, cum = vocab_weights()
    out = []
    for i in range(n):
        cid = searchers[i % len(searchers)]
        k = rnd.choice((1, 1, 2, 3))
        q = rnd.choices(words, cum_weights=cum, k=k) if i % 2 else rnd.sample(words[:2000], k)
        scope = rnd.random()
        if scope < 0.2:
            prefix = f"#sg{rnd.choice(groups_of[cid])} "
        elif scope < 0.3:
            prefix = f"@s{rnd.randrange(users)} "
        else:
            prefix = ""
        out.append((cid, f"search {prefix}{' '.join(q)}"))
    return out


def w9(b: Bench) -> None:
    """Search over a large history through the realm text protocol (realm -> main gRPC ->
    storage), as people search: each searcher in several groups and private conversations."""
    a = b.args
    stack = b.use_stack("search")
    rnd = random.Random(8)  # the seed of the first runs (as workload 8): same data
    n_users, n_groups = max(a.search_users, 4), max(a.search_groups, GROUPS_PER_SEARCHER)
    n_searchers = min(a.search_searchers, n_users - 1)
    cids, _ = b.add_clients([(f"s{i}", realm_of(i)) for i in range(n_users)])
    owner = cids[-1]  # the owner of every group is not a searcher
    b.commands([(owner, f"creategroup sg{g}") for g in range(n_groups)])
    searchers = cids[:n_searchers]
    groups_of = {c: rnd.sample(range(n_groups), GROUPS_PER_SEARCHER) for c in searchers}
    b.commands([(c, f"joingroup sg{g}") for c in searchers for g in groups_of[c]])
    # Main stops while the history is written into its database, then starts again on the same
    # port; the realms re-link and every session resumes by token.
    linked = {name: _links(p.log()) for name, p in stack.realms.items()}
    port = stack.main.port
    stack.main.terminate()
    t0 = time.perf_counter()
    extra = list(stack.main_extra)
    dsn = extra[extra.index("--db") + 1] if "--db" in extra else ""
    asyncio.run(_load(stack.data_dir / "chat.db", dsn, a.search_messages, n_users, n_groups, rnd))
    load_s = time.perf_counter() - t0
    log(f"{a.search_messages:,} messages loaded in {load_s:.1f} s ({a.search_messages / load_s:,.0f}/s)")
    deadline = time.monotonic() + 60
    while True:
        try:
            stack.main = start_main(stack.data_dir, port, *stack.main_extra)
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    b.set_server_pids()
    while any(_links(p.log()) <= linked[name] for name, p in stack.realms.items()):
        if time.monotonic() > deadline:
            raise RuntimeError("the realms did not re-link to the restarted main within 60 s")
        time.sleep(0.05)
    queries = search_queries(rnd, a.search_queries, searchers, n_users, groups_of)
    per: list[list[tuple[int, str]]] = [[] for _ in range(b.workers.n)]
    for cid, line in queries:
        per[b.worker_of(cid)].append((cid, line))
    b.workers.call([{"op": "search", "queries": p[:20]} for p in per])  # warm the page cache a little
    b.wait_quiet()
    win = b.meter.start()
    t0 = time.perf_counter()
    res = b.workers.call([{"op": "search", "queries": p} for p in per])
    seconds = time.perf_counter() - t0
    w = win.stop()
    lat = array("q")
    for r in res:
        lat.extend(wk.unpack_lat(r["lat_us"]))
    p50, p99, p999 = percentiles(lat)
    errors = sum(r["errors"] for r in res)
    r = b.row("9", "search", f"{a.search_messages:,} msgs, {len(queries)} queries, {b.workers.n} in flight",
              window=w, rate=len(lat) / seconds, unit="q/s", goal="p99 < 50 ms over 1,000,000 messages",
              p50_ms=p50, p99_ms=p99, p999_ms=p999, errors=errors, ok=errors == 0)
    # Every query answered (what the smoke test's delivered >= expected check means here).
    r.extra.update({"delivered": len(lat) - errors, "expected_deliveries": len(queries), "messages": a.search_messages,
                    "results": sum(x["hits"] for x in res), "load_s": round(load_s, 1),
                    "error_samples": [s for x in res for s in x["error_samples"]][:5],
                    "max_ms": max(lat, default=0) / 1000})
    log(f"search: p50 {p50:.2f} ms, p99 {p99:.2f} ms, p999 {p999:.2f} ms, max {max(lat, default=0) / 1000:.1f} ms")


# ---- 10: contended ------------------------------------------------------------------------------

# A login step or a send not answered within this long fails (and a peer message not received
# within it is lost): what a person would call broken, and far above any p99 of a healthy run.
CONTENDED_TIMEOUT_S = 30.0


@contextlib.contextmanager
def busy_loops(b: Bench, n: int) -> Iterator[None]:
    """n processes spinning (`while True: pass`) for the duration of the block; metered as
    "busy", so that the "other" column keeps meaning the rest of the machine."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    if procs:
        b.meter.set("busy", [p.pid for p in procs])
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()
        b.meter.drop("busy")


def contended_round(b: Bench, busy: int, peer: str = "") -> Row:
    """Workload 10, one round: `busy` spinning processes start (the servers are up and idle),
    then --contended-clients clients (half per realm / ngIRCd server) log in and send private
    messages to the other side at --contended-rate msg/s, open loop, for --duration. Login
    failures and failed sends are counted, not fatal. The clients are closed afterwards."""
    a = b.args
    n = a.contended_clients - a.contended_clients % 2
    rate = a.contended_rate
    tag = f"c{b.next_cid}_"  # fresh user names every round
    with busy_loops(b, busy):
        t0 = time.perf_counter()
        if peer:
            servers = b.peer.names
            cids, failed, samples = irc_clients(b, [(f"{tag}{i}", servers[i % 2]) for i in range(n)], pairs=True,
                                                tolerant=True, timeout=CONTENDED_TIMEOUT_S)
        else:
            cids, failed, samples = b.add_clients_tolerant([(f"{tag}{i}", realm_of(i)) for i in range(n)],
                                                           timeout=CONTENDED_TIMEOUT_S)
        login_s = time.perf_counter() - t0
        slowest = {} if peer else dict(b.login_times)
        base = cids[0]
        partner = {c: base + ((c - base) ^ 1) for c in cids}
        senders = [c for c in cids if c not in failed and partner[c] not in failed]
        if not peer:
            b.set_prefixes({c: f"sendprivate {b.users[partner[c]][0]} " for c in senders})
        log(f"{len(cids) - len(failed)}/{n} logged in in {login_s:.1f} s with {busy} busy loops"
            + (f" (slowest steps, ms: {slowest})" if slowest else "") + (f", e.g. {samples[:2]}" if failed else ""))
        res = b.run_phase(senders, 1, a.duration, rate=rate, drain=CONTENDED_TIMEOUT_S)
    what = f"{busy} busy loops" if busy else "quiet"
    r = b.row("10", f"{peer + ' ' if peer else ''}{what}",
              f"{rate:.0f}/s, {n - len(failed)}/{n} logged in", res, peer=peer,
              goal="every client logs in, no failed send")
    r.extra.update({"compare": f"10-{'contended' if busy else 'quiet'}", "clients": n,
                    "logged_in": n - len(failed), "login_s": round(login_s, 2), "login_error_samples": samples,
                    "busy_loops": busy, "timeout_s": CONTENDED_TIMEOUT_S, "slowest_login_steps_ms": slowest,
                    "ack_max_ms": max(res.ack_lat_us, default=0) / 1000})
    if failed and not peer:
        r.ok = False
    if peer:
        close_irc_clients(b)
    else:
        b.workers.all("close")
        b.users.clear()
    return r


def w10(b: Bench, peer: str = "") -> None:
    if peer:
        b.use_peer("contended")
    else:
        b.use_stack("contended")
    quiet = contended_round(b, 0, peer)
    loaded = contended_round(b, b.args.busy_loops, peer)
    if quiet.p99_ms:
        loaded.extra["p99_vs_quiet"] = round((loaded.p99_ms or 0) / quiet.p99_ms, 2)


# ---- the IRC peer's equivalents (--peer ngircd) --------------------------------------------------

PEER_DRAIN_S = 30.0  # IRC has no OK: a message not received this long after the end is lost


def ensure_peer_private(b: Bench) -> list[int]:
    if b.stack_key != "peer-private":
        peer = b.use_peer("private")
        n = b.args.clients - b.args.clients % 2
        t0 = time.perf_counter()
        b.private_cids, _, _ = irc_clients(b, [(f"p{i}", peer.names[i % 2]) for i in range(n)], pairs=True)
        log(f"{n} IRC clients registered ({n / (time.perf_counter() - t0):.0f}/s), half on each server")
    return b.private_cids


def peer_w1(b: Bench, peer: str) -> None:
    cids = ensure_peer_private(b)
    rate = b.args.rate1
    if b.args.warmup > 0:
        b.run_phase(cids, 1, b.args.warmup, rate=rate, drain=PEER_DRAIN_S)
    res = b.run_phase(cids, 1, b.args.duration, rate=rate, drain=PEER_DRAIN_S)
    r = b.row("1", f"{peer} private fixed", f"{rate:.0f}/s, {len(cids)} clients, 2 linked", res, peer=peer)
    r.extra["compare"] = "1"


def peer_w3(b: Bench, peer: str) -> None:
    cids = ensure_peer_private(b)
    res = b.run_phase(cids, 1, b.args.full_duration, depth=b.args.depth, drain=PEER_DRAIN_S)
    r = b.row("3", f"{peer} private max", f"closed, {len(cids)}x{b.args.depth} sent, not yet received", res,
              peer=peer)
    r.extra["compare"] = "3"


def peer_w5(b: Bench, peer: str) -> None:
    """Memory per idle registered connection: --idle clients on server a, RSS of each server
    before and after (b holds them as remote users)."""
    pair = b.use_peer("idle")
    time.sleep(1)
    rss0 = b.meter.rss_mb()
    win = b.meter.start(threads=False)
    t0 = time.perf_counter()
    irc_clients(b, [(f"i{i}", pair.names[0]) for i in range(b.args.idle)], pairs=False)
    log(f"{b.args.idle} idle IRC clients registered on {pair.names[0]} in {time.perf_counter() - t0:.1f} s")
    time.sleep(2)
    w = win.stop()
    rss1 = b.meter.rss_mb()
    kib = {k: round((rss1[k] - rss0.get(k, 0.0)) * 1024 / max(b.args.idle, 1), 2) for k in (*pair.names, "gen")}
    r = b.row("5", f"{peer} {b.args.idle} idle",
              f"KiB/conn: {kib[pair.names[0]]:.2f} a (local), {kib[pair.names[1]]:.2f} b (remote)", window=w,
              peer=peer)
    r.extra.update({"compare": "5", "kib_per_idle_connection": kib,
                    "rss_before_idle_mb": {k: round(v, 1) for k, v in rss0.items()},
                    "rss_with_idle_mb": {k: round(v, 1) for k, v in rss1.items()}})


def peer_w10(b: Bench, peer: str) -> None:
    w10(b, peer)


WORKLOADS = {"1": w1, "2": w2, "3": w3, "4": w4, "5": w5, "6": w6, "7": w7, "8": w8, "9": w9, "10": w10}
PEER_WORKLOADS = {"1": peer_w1, "3": peer_w3, "5": peer_w5, "10": peer_w10}


# ---- ours / peer ------------------------------------------------------------------------------------

def _other(r: Row) -> str:
    return f"{r.cpu_pct['other']:.0f}" if "other" in r.cpu_pct else "-"


def ratio_rows(rows: list[Row], peer: str, busy_loops: int = 3) -> list[list[str]]:
    """[metric, realmchat, peer, ours/peer, other CPU% ours/peer] for every compared figure."""
    ours = {r.extra["compare"]: r for r in rows if not r.peer and "compare" in r.extra}
    theirs = {r.extra["compare"]: r for r in rows if r.peer == peer and "compare" in r.extra}
    out: list[list[str]] = []

    def add(key: str, metric: str, get: Any, digits: int = 2) -> None:
        if key not in ours or key not in theirs:
            return
        a, p = get(ours[key]), get(theirs[key])
        if a is None or p is None:
            return
        ratio = f"{a / p:.2f}" if p else "-"
        out.append([metric, f"{a:,.{digits}f}", f"{p:,.{digits}f}", ratio,
                    f"{_other(ours[key])}/{_other(theirs[key])}"])

    fixed = f" ({ours['1'].target})" if "1" in ours else ""
    add("1", f"1: p50 ms{fixed}", lambda r: r.p50_ms)
    add("1", f"1: p99 ms{fixed}", lambda r: r.p99_ms)
    add("3", "3: delivered msg/s (full speed)", lambda r: r.rate, 0)
    add("5", "5: KiB per idle connection (alpha / ngircd a)",
        lambda r: r.extra["kib_per_idle_connection"].get("alpha", r.extra["kib_per_idle_connection"].get(f"{peer}-a")))
    add("5", "5: KiB per idle connection (main / ngircd b)",
        lambda r: r.extra["kib_per_idle_connection"].get("main", r.extra["kib_per_idle_connection"].get(f"{peer}-b")))
    for key, what in (("10-quiet", "quiet"), ("10-contended", f"{busy_loops} busy loops")):
        add(key, f"10 {what}: logged in", lambda r: r.extra["logged_in"], 0)
        add(key, f"10 {what}: failed sends", lambda r: r.errors, 0)
        add(key, f"10 {what}: lost", lambda r: r.lost, 0)
        add(key, f"10 {what}: p50 ms", lambda r: r.p50_ms)
        add(key, f"10 {what}: p99 ms", lambda r: r.p99_ms)
    add("10-contended", "10: p99 contended / quiet", lambda r: r.extra.get("p99_vs_quiet"))
    return out


def ratio_table(rows: list[Row], peer: str, busy_loops: int = 3) -> str:
    return grid(("figure", "realmchat", peer, "ours/peer", "other CPU% ours/peer"), ratio_rows(rows, peer, busy_loops))
