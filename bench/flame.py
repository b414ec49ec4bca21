"""Summarises py-spy's raw (collapsed-stack) profiles, as written by `python -m bench --profile
DIR`: per thread, the functions with the most samples on top of the stack (self) and on the
stack at all (inclusive), as shares of the process's samples. py-spy drops idle samples by
default, so the shares are of time spent running (or in a syscall).

    python -m bench.flame DIR/w3-private-max-main.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# "thread (123): MainThread;frame (file.py:12);frame (file.py:40) 17"
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_LINENO = re.compile(r":\d+\)$")


def frame_name(frame: str) -> str:
    """'fn (path/file.py:12)' -> 'fn (path/file.py)': lines of one function are merged."""
    return _LINENO.sub(")", frame.strip())


def summarise(path: Path, top: int = 20, lines: bool = False) -> str:
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for raw in path.read_text().splitlines():
        m = _LINE.match(raw.strip())
        if not m:
            continue
        n = int(m["count"])
        frames = m["stack"].split(";")
        # With --threads the first frame is "thread (TID): NAME"; keep the name only.
        thread = frames[0].split(":", 1)[-1].strip() if frames[0].startswith("thread (") else "?"
        names = [f.strip() if lines else frame_name(f) for f in frames[1:]] or [thread]
        total += n
        threads[thread] += n
        self_c[names[-1]] += n
        for name in set(names):
            incl[name] += n
    if not total:
        return f"{path}: no samples"
    out = [f"== {path.name}: {total} samples"]
    out.append("threads: " + ", ".join(f"{t} {100 * c / total:.0f}%" for t, c in threads.most_common()))
    out.append(f"-- self (top {top})")
    out += [f"{100 * c / total:5.1f}%  {f}" for f, c in self_c.most_common(top)]
    out.append(f"-- inclusive (top {top})")
    out += [f"{100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.flame", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--lines", action="store_true", help="keep line numbers (which statement is hot)")
    a = p.parse_args(argv)
    for f in a.files:
        print(summarise(f, a.top, a.lines))
        print()


if __name__ == "__main__":
    main()
