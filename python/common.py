"""What the article scripts share and the articles leave out: the command line, the mock API's
token, the verification of every answer, and the one JSON line each script prints.

The approaches themselves live in the article*_*.py files, as short as the articles wrote them.
Nothing here is timed: a script times only its approach (pool or session start-up included,
interpreter start-up and imports not).

Verification needs no trust in the server:
- article 1: each item is recomputed from the seed (`item`, the mock API's own generator:
  splitmix64 keyed by seed, kind and id), so a wrong, missing or duplicated answer is caught;
- article 2: the server's `GET /new/tickets/summary` (tickets, attachments, checksum) must equal
  the summary of what the client downloaded (`Summary`, the mock API's FNV-1a checksum), or the
  expected summary the harness passes (`--expect-*`, computed from the seed by the harness).
"""

import argparse
import json
import os
import resource
import sys
import time

DEFAULT_TOKEN = "fanout-mock-token"
TOKEN_ENV = "FANOUT_TOKEN"
MASK = (1 << 64) - 1


def parse_args(description, workers=None, jobs=200, migration=False):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", required=True, help="the mock API, as `fanout mock-api` prints it")
    parser.add_argument("--jobs", type=int, default=None if migration else jobs,
                        help="calls (article 1) or the queue's first N tickets (article 2)")
    if workers is not None:
        parser.add_argument("--workers", type=int, default=workers, help="pool size / calls in flight")
    parser.add_argument("--seed", type=int, default=42, help="the server's --seed")
    if migration:
        parser.add_argument("--queue", default="support")
        parser.add_argument("--inner-workers", type=int, default=20,
                            help="workers of each ticket's nested pool over its attachments")
        parser.add_argument("--expect-tickets", type=int)
        parser.add_argument("--expect-attachments", type=int)
        parser.add_argument("--expect-checksum")
    args = parser.parse_args()
    args.url = args.url.rstrip("/")
    return args


def auth():
    """The `Authorization` header: the token from $FANOUT_TOKEN (never a flag: a command line
    is visible to every user), or the mock API's development token."""
    return {"Authorization": "Bearer " + os.environ.get(TOKEN_ENV, DEFAULT_TOKEN)}


def _cpu():
    """CPU seconds of this process and of its reaped children (a process pool's workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Timer:
    """Wall and CPU seconds of a `with` block (`seconds`, `cpu_seconds`)."""

    def __enter__(self):
        self.start, self.cpu_start = time.perf_counter(), _cpu()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = _cpu() - self.cpu_start
        return False


def emit(approach, jobs, wall, ok, errors, verified, error=None, **extra):
    """Prints the script's one JSON line (the harness reads the last line of stdout)."""
    line = {
        "approach": approach,
        "jobs": jobs,
        "wall_seconds": wall,
        "ok": ok,
        "errors": errors,
        "verified": verified,
        "error": error,
        "python": sys.version.split()[0],
    }
    line.update(extra)
    print(json.dumps(line), flush=True)


def describe(error):
    return f"{type(error).__name__}: {error}"


# --- article 1: the items, recomputed from the seed --------------------------------------------

GAMMA = 0x9E3779B97F4A7C15
KIND_ITEM = 1
ADJECTIVES = ["amber", "brisk", "calm", "dusty", "eager", "faint", "gentle", "hollow", "ivory",
              "jolly", "keen", "lucid", "mellow", "nimble", "olive", "proud", "quiet", "rustic",
              "silent", "tidy"]
NOUNS = ["anchor", "beacon", "canyon", "delta", "ember", "falcon", "garden", "harbor", "island",
         "jungle", "kettle", "lantern", "meadow", "nebula", "orchard", "pebble", "quarry", "river",
         "summit", "thicket"]


def _mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def item(seed, item_id):
    """The item the server serves for `item_id` (the mock API's `Dataset::item`)."""
    state = _mix64(seed ^ _mix64(((KIND_ITEM * GAMMA) & MASK) ^ _mix64(item_id)))

    def below(n):
        nonlocal state
        state = (state + GAMMA) & MASK
        return _mix64(state) % n

    adjective = ADJECTIVES[below(len(ADJECTIVES))]
    noun = NOUNS[below(len(NOUNS))]
    return {"id": item_id, "name": f"{adjective} {noun} {item_id}", "value": below(1_000_000)}


def report_items(approach, args, timer, results, error=None):
    """Checks every answer of article 1 against its recomputed item and prints the line."""
    ids = range(1, args.jobs + 1)
    results = list(results or [])
    ok = sum(1 for i, got in zip(ids, results) if got == item(args.seed, i))
    errors = args.jobs - ok
    emit(approach, args.jobs, timer.seconds, ok, errors, verified=error is None and ok == args.jobs,
         error=error, cpu_seconds=timer.cpu_seconds, workers=getattr(args, "workers", 1))


# --- article 2: the migration's summary --------------------------------------------------------

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


def _fnv(tag, *values):
    h = FNV_OFFSET
    for chunk in [tag] + [_frame(v) for v in values]:
        for b in chunk:
            h = ((h ^ b) * FNV_PRIME) & MASK
    return h


def _frame(value):
    if isinstance(value, int):
        return value.to_bytes(8, "little")
    data = value.encode() if isinstance(value, str) else value
    return len(data).to_bytes(8, "little") + data


def ticket_digest(ticket):
    return _fnv(b"ticket\0", ticket["id"], ticket["id"], ticket["subject"], ticket["body"],
                ticket["requester"], ticket["created_at"], ticket["status"])


def attachment_digest(old_id, name, data):
    return _fnv(b"attachment\0", old_id, name, data)


def summary_of(migrated):
    """The summary a server holds after exactly `migrated`: [(ticket, [(name, bytes), ...])]."""
    total, attachments = 0, 0
    for ticket, files in migrated:
        total = (total + ticket_digest(ticket)) & MASK
        for name, data in files:
            attachments += 1
            total = (total + attachment_digest(ticket["id"], name, data)) & MASK
    return {"tickets": len(migrated), "attachments": attachments, "checksum": f"{total:016x}"}


def report_migration(approach, args, timer, listed, migrated, server_summary, error=None):
    """Checks the server's summary against the expected one and prints the line.

    `listed` is the number of tickets the client meant to migrate, `migrated` what came back
    from the pool ([(ticket, [(name, bytes)])], empty when the pool failed)."""
    if args.expect_checksum is not None:
        expected = {"tickets": args.expect_tickets, "attachments": args.expect_attachments,
                    "checksum": args.expect_checksum}
    else:
        expected = summary_of(migrated)
    ok = len(migrated)
    verified = (error is None and ok == listed and server_summary == expected
                and expected["tickets"] == listed)
    emit(approach, listed, timer.seconds, ok, listed - ok, verified, error=error,
         cpu_seconds=timer.cpu_seconds, workers=getattr(args, "workers", 1), tickets_posted=(server_summary or {}).get("tickets"),
         summary=server_summary, expected=expected)
