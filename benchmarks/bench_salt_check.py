"""The salt rule (:func:`assets.echo.deid.weak_salt_reason`): random salts accepted, guessable ones refused.

    PYTHONPATH=. python benchmarks/bench_salt_check.py [--random 200000] [--seed 0]

* ``--random`` salts of 32 random bytes (seeded ``random.Random``), each written as hex, base64 and base64url
  without padding (what ``secrets.token_hex(32)``, ``base64`` and ``secrets.token_urlsafe(32)`` print): how
  many are refused (false refusals), and the least character-frequency entropy and distinct-character count
  seen per encoding (the margins of the thresholds).
* A guess list in the manner of the issue's attack (2,748 guesses such as ``hospital-echo-2024``): site and
  hospital words, pairs of them, a year 2000-2026, joined by ``-``, ``_``, ``.`` or nothing, in lower,
  title and upper case; each also repeated up to 64 characters and hex-encoded (``"...".encode().hex()``),
  the forms that pass a length rule. How many are refused.

Prints Markdown.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import math
import platform
import random
import time
from collections import Counter

from assets.echo.deid import weak_salt_reason

WORDS = [
    "hospital",
    "echo",
    "clinic",
    "cardio",
    "secret",
    "salt",
    "site",
    "medrwr",
    "deid",
    "cleveland",
    "heart",
]
SEPARATORS = ["-", "_", ".", ""]


def _bits(s: str) -> float:
    counts = Counter(s)
    return -sum(c * math.log2(c / len(s)) for c in counts.values())


def guesses() -> list[str]:
    out = set()
    years = [str(y) for y in range(2000, 2027)]
    for w1, w2 in itertools.product(WORDS, repeat=2):
        for sep in SEPARATORS:
            for year in years:
                for base in (f"{w1}{sep}{w2}{sep}{year}", f"{w1}{sep}{year}"):
                    for cased in (base, base.title(), base.upper()):
                        out.add(cased)
                        out.add((cased * 8)[:64])
                        out.add(cased.encode().hex())
                        out.add((cased.encode().hex() * 4)[:64])
    return sorted(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--random", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    encoders = {
        "hex": lambda b: b.hex(),
        "base64": lambda b: base64.b64encode(b).decode(),
        "base64url": lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
    }
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}\n")
    print("| encoding | random salts | refused | least entropy bits | least distinct chars |")
    print("|---|---|---|---|---|")
    t0 = time.perf_counter()
    checks = 0
    for name, enc in encoders.items():
        refused, least_bits, least_distinct = 0, math.inf, math.inf
        r = random.Random(rng.random())
        for _ in range(args.random):
            salt = enc(r.randbytes(32))
            checks += 1
            if weak_salt_reason(salt) is not None:
                refused += 1
            body = salt.rstrip("=")
            least_bits = min(least_bits, _bits(body))
            least_distinct = min(least_distinct, len(set(body)))
        print(f"| {name} | {args.random:,} | {refused} | {least_bits:.1f} | {least_distinct} |")
    per_check = (time.perf_counter() - t0) / checks * 1e6
    g = guesses()
    missed = [s for s in g if weak_salt_reason(s) is None]
    print(f"\nguessable salts: {len(g):,}, refused {len(g) - len(missed):,}, accepted {len(missed)}")
    for s in missed[:10]:
        print(f"  accepted: {s}")
    print(f"\ncost: {per_check:.1f} µs per check (including the random generation)")


if __name__ == "__main__":
    main()
