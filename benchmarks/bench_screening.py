"""Sanctions screening against a 10,000-entry list: our screener beside a brute-force scan, in the same run.

    .venv/bin/python benchmarks/bench_screening.py [--entries 10000] [--queries 2000] [--repeat 3] [--seed 13]

The list: a seeded synthetic list written in OFAC's SDN layout (sdn.csv + alt.csv, ``-0-`` nulls, the Ctrl-Z
last line) and read back with ``load_sdn``: individuals ``LAST, First Patronymic`` (Slavic-, Arabic- and
Latin-sounding names built from syllables), companies with legal forms, vessels, and one alias in five.
The queries: half true variants of list names (a misspelling of one or two letters, ``First Last`` order,
the patronymic dropped, Cyrillic script written from the Latin name by a letter table of this file, a legal
form swapped), half names made the same way but not on the list (some of them close to a listed name:
the precision figure counts those hits as false).

Brute force: every normalised query against every list key with ``rapidfuzz.process.cdist(scorer=
fuzz.token_sort_ratio, score_cutoff=THRESHOLD, workers=-1)`` (``sanctions.brute_force_screen``). Ours:
``sanctions.screen`` (pre-sorted, deduplicated keys, an exact length window, ``fuzz.ratio`` in cdist). Both
normalise their queries inside the timing (the normalisation cache is cleared before each run); the list's
keys are built once, before either, and timed apart. Each side runs ``--repeat`` times, alternating; the best
time counts. Target (issue 13): the same hits, so the same recall, at no less than the brute force's
throughput. Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emp_core.compliance import sanctions

SYLLABLES = {
    "slavic": ["vol", "kov", "zak", "har", "chen", "ko", "be", "lou", "so", "va", "kuz", "net", "sov", "pet", "rov",
               "mel", "ni", "chuk", "grig", "or", "yan", "ti", "mo", "fe", "yev", "sher", "ba", "ya", "ku", "bo",
               "vich", "zhu", "kho", "lo", "dov", "der", "ev", "yan", "or", "lov", "skiy"],
    "arabic": ["al", "ra", "shi", "di", "had", "dad", "na", "qib", "man", "sour", "zu", "bai", "qa", "sim", "sa",
               "leh", "ja", "bou", "ri", "ha", "mid", "ka", "rim", "fa", "war", "tar"],
    "latin": ["ra", "mi", "rez", "cas", "til", "lo", "fer", "rei", "ra", "sil", "va", "men", "des", "o", "kon",
              "kwo", "ngu", "yen", "mar", "tin", "gar", "cia", "lo", "pez", "tor", "res"],
}
GIVEN = {"slavic": ["Dmitriy", "Yuriy", "Sergey", "Arkadiy", "Vadim", "Leonid", "Maksim", "Pavel", "Bogdan",
                    "Yelena", "Tatyana", "Irina", "Oksana", "Gennadiy", "Oleg", "Nikolay", "Viktor", "Anna"],
         "arabic": ["Khalid", "Samir", "Faisal", "Tariq", "Hussein", "Nabil", "Omar", "Mustafa", "Ahmad", "Yusuf",
                    "Hamad", "Karim", "Adnan", "Jamil", "Mahmoud", "Ali"],
         "latin": ["Jorge", "Luis", "Marcos", "Antonio", "Carlos", "Juan", "Pedro", "Miguel", "Ana", "Lucia",
                   "Diego", "Rafael"]}
PATRONYMIC = ["Sergeyevich", "Petrovich", "Andreyevna", "Mikhaylovich", "Nikolayevich", "Olegovich",
              "Borisovich", "Igorevna", "Ivanovich", "Viktorovna", "Aleksandrovna", "Stepanovich"]
WORDS = ["Global", "Star", "Trading", "Eastern", "Horizon", "Shipping", "Blue", "Dragon", "Holdings", "Sunrise",
         "Petrochemical", "Nord", "Balt", "Invest", "Meridian", "Minerals", "Golden", "Crescent", "Red", "Sea",
         "Arms", "Supply", "Volga", "Machine", "Ural", "Tekh", "Snab", "Caspian", "Finance", "Andes", "Pacific",
         "Cargo", "Arctic", "Carrier", "Ocean", "Pearl", "Falcon", "Crown", "Iskander", "Defence", "Systems",
         "Severnyy", "Potok", "Logistika", "Kapital", "Energo", "Neft", "Gaz", "Prom", "Metall", "Bank"]
FORMS = ["LLC", "LTD", "LIMITED", "OOO", "AO", "PJSC", "JSC", "FZE", "S.A.", "SARL", "AG", "GMBH", "CO."]
VESSEL = ["OCEAN", "SEA", "STAR", "ARCTIC", "PEARL", "FALCON", "PROGRESS", "VICTORY", "HORIZON", "NEPTUNE"]
TO_CYRILLIC = [("shch", "щ"), ("kh", "х"), ("zh", "ж"), ("ch", "ч"), ("sh", "ш"), ("ya", "я"), ("yu", "ю"),
               ("ye", "е"), ("iy", "ий"), ("a", "а"), ("b", "б"), ("v", "в"), ("g", "г"), ("d", "д"),
               ("e", "е"), ("z", "з"), ("i", "и"), ("y", "ы"), ("k", "к"), ("l", "л"), ("m", "м"), ("n", "н"),
               ("o", "о"), ("p", "п"), ("r", "р"), ("s", "с"), ("t", "т"), ("u", "у"), ("f", "ф"), ("ts", "ц")]


def surname(rng: random.Random, style: str) -> str:
    return "".join(rng.choice(SYLLABLES[style]) for _ in range(rng.randint(2, 4))).capitalize()


def make_list(n: int, rng: random.Random) -> tuple[list[list], list[list]]:
    """SDN rows and alt rows of ``n`` synthetic entries."""
    sdn, alt, null = [], [], "-0- "
    for i in range(n):
        ent, r = 10_000 + i, rng.random()
        if r < 0.6:
            style = rng.choice(["slavic", "slavic", "arabic", "latin"])
            given = rng.choice(GIVEN[style])
            rest = f" {rng.choice(PATRONYMIC)}" if style == "slavic" else (
                f" {rng.choice(GIVEN[style])}" if rng.random() < 0.5 else "")
            name, kind = f"{surname(rng, style).upper()}, {given}{rest}", "individual"
        elif r < 0.9:
            words = [*rng.sample(WORDS, rng.randint(2, 3)), surname(rng, rng.choice(list(SYLLABLES)))]
            rng.shuffle(words)
            name, kind = f"{' '.join(words).upper()} {rng.choice(FORMS)}", null
        else:
            name, kind = f"{rng.choice(VESSEL)} {surname(rng, 'latin').upper()} {rng.randint(1, 99)}", "vessel"
        sdn.append([ent, name, kind, "SYNTH", null, null, null, null, null, null, null, "Synthetic."])
        if rng.random() < 0.2:
            alias = (f"{surname(rng, 'slavic').upper()}, {name.split(', ')[1]}" if kind == "individual"
                     else f"{surname(rng, 'latin').upper()} {rng.choice(WORDS).upper()} {rng.choice(FORMS)}")
            alt.append([ent, 900_000 + i, "aka", alias, null])
    return sdn, alt


def write(path: Path, rows: list[list]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\r\n").writerows(rows)
    with path.open("ab") as f:
        f.write(b"\x1a")


def typo(rng: random.Random, s: str, edits: int) -> str:
    for _ in range(edits):
        words = s.split()
        i = max(range(len(words)), key=lambda k: len(words[k]))
        w = words[i]
        j = rng.randrange(1, len(w) - 1) if len(w) > 2 else 0
        op = rng.choice("sdx")
        w = (w[:j] + rng.choice("aeioulnrst") + w[j + 1:] if op == "s" else
             w[:j] + w[j + 1:] if op == "d" else w[:j] + w[j] + w[j:])
        words[i] = w
        s = " ".join(words)
    return s


def cyrillic(s: str) -> str:
    out, low = [], s.lower()
    i = 0
    while i < len(low):
        for lat, cyr in TO_CYRILLIC:
            if low.startswith(lat, i):
                out.append(cyr)
                i += len(lat)
                break
        else:
            out.append(low[i])
            i += 1
    return "".join(out).title()


def make_queries(sdn: list[list], count: int, rng: random.Random) -> tuple[list[str], list[int | None]]:
    queries, expected = [], []
    for _ in range(count // 2):
        ent, name, kind = rng.choice(sdn)[:3]
        if kind == "individual":
            last, given = name.split(", ")
            first_last = f"{given} {last.title()}"
            how = rng.choice(["typo", "typo2", "order", "short", "cyrillic"])
            if how.startswith("typo"):
                q = typo(rng, first_last, 2 if how == "typo2" else 1)
            elif how == "short":
                q = f"{given.split()[0]} {last.title()}"
            else:
                q = cyrillic(first_last) if how == "cyrillic" else first_last
        else:
            how = rng.choice(["typo", "form", "order"])
            base = " ".join(name.split()[:-1]) if kind != "vessel" else name
            if how == "typo":
                q = typo(rng, name.title(), 1)
            elif how == "form":
                q = f"{base.title()} {rng.choice(FORMS)}"
            else:
                q = " ".join(reversed(name.split()))
        queries.append(q)
        expected.append(ent)
    for _ in range(count - count // 2):
        r = rng.random()
        if r < 0.5:
            style = rng.choice(list(SYLLABLES))
            q = f"{rng.choice(GIVEN[style])} {surname(rng, style)}"
        else:
            q = f"{' '.join(rng.sample(WORDS, 2))} {surname(rng, 'latin')} {rng.choice(FORMS)}"
        queries.append(q)
        expected.append(None)
    order = list(range(len(queries)))
    rng.shuffle(order)
    return [queries[i] for i in order], [expected[i] for i in order]


def timed(fn, queries, sl) -> tuple[float, object]:
    sanctions.normalise.cache_clear()
    t0 = time.perf_counter()
    hits = fn(queries, sl)
    return time.perf_counter() - t0, hits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    sdn, alt = make_list(args.entries, rng)
    queries, expected = make_queries(sdn, args.queries, rng)
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp) / "sdn.csv", sdn)
        write(Path(tmp) / "alt.csv", alt)
        t0 = time.perf_counter()
        sl = sanctions.load_sdn(Path(tmp) / "sdn.csv", Path(tmp) / "alt.csv")
        load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sanctions.screen([], sl)  # builds the length-ordered index of the list's keys
    index_s = time.perf_counter() - t0
    ours_t, brute_t = [], []
    for _ in range(args.repeat):
        t, ours = timed(sanctions.screen, queries, sl)
        ours_t.append(t)
        t, brute = timed(sanctions.brute_force_screen, queries, sl)
        brute_t.append(t)
    pairs = ("query_index", "ent_num")
    same = (ours.select(*pairs, "score").sort(*pairs).equals(brute.select(*pairs, "score").sort(*pairs)))
    pr_ours = sanctions.precision_recall(ours, expected)
    pr_brute = sanctions.precision_recall(brute, expected)
    ours_rate, brute_rate = len(queries) / min(ours_t), len(queries) / min(brute_t)
    print(f"list: {len(sl):,} entries, {sl.names.height:,} names, {sl.keys.height:,} keys; loaded in {load_s:.2f} s "
          f"(normalisation included), index {index_s:.3f} s", file=sys.stderr)
    print(f"queries: {len(queries):,} ({sum(e is not None for e in expected):,} true variants), threshold "
          f"{sanctions.THRESHOLD}", file=sys.stderr)
    for label, rate, pr in (("ours", ours_rate, pr_ours), ("brute force", brute_rate, pr_brute)):
        print(f"  {label:12s} {rate:10,.0f} names/s  recall {pr['recall']:.4f}  precision {pr['precision']:.4f}  "
              f"(tp {pr['tp']}, fp {pr['fp']}, fn {pr['fn']})", file=sys.stderr)
    print(f"  same hits and scores as the brute force: {same}; speed ratio {ours_rate / brute_rate:.2f}x",
          file=sys.stderr)
    print(json.dumps({
        "bench": "screening", "entries": len(sl), "keys": sl.keys.height, "queries": len(queries),
        "threshold": sanctions.THRESHOLD, "ours_names_per_s": round(ours_rate, 1),
        "brute_names_per_s": round(brute_rate, 1), "ratio": round(ours_rate / brute_rate, 3),
        "ours_recall": round(pr_ours["recall"], 4), "brute_recall": round(pr_brute["recall"], 4),
        "ours_precision": round(pr_ours["precision"], 4), "brute_precision": round(pr_brute["precision"], 4),
        "same_hits": same, "recall_equal": pr_ours["recall"] == pr_brute["recall"],
        "target_met": bool(same and ours_rate >= brute_rate), "load_s": round(load_s, 3),
        "index_s": round(index_s, 4)}))


if __name__ == "__main__":
    main()
