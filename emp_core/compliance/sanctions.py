"""Sanctions screening: the OFAC SDN list in its public CSV layout, name normalisation, fuzzy matching.

**The list.** :func:`load_sdn` reads the legacy ``sdn.csv`` (no header; ``ent_num, SDN_Name, SDN_Type,
Program, Title, Call_Sign, Vess_type, Tonnage, GRT, Vess_flag, Vess_owner, Remarks``; nulls written ``-0-``;
individuals named ``LAST, First``) and, optionally, ``alt.csv`` (``ent_num, alt_num, alt_type, alt_name,
alt_remarks``; ``alt_type`` aka, fka or nka). The real files load as they are (Windows-1252 text, ``-0- `` with
a trailing space, a last line holding only the end-of-file character ``\\x1a``). Every row is read and
validated before anything is returned, so a malformed file raises :class:`SanctionsFileError` naming the file
and line and nothing is half-loaded.

**Normalisation** (:func:`normalise`), the same on both sides of a comparison:

1. Unicode NFKC, lower case, apostrophes deleted (O'Brien -> obrien), dotted abbreviations closed up
   (L.L.C. -> llc), anything but letters and digits made a space, in the name's own script;
2. legal-form words removed in that script (``ООО``, ``Общество с ограниченной ответственностью``,
   ``Limited Liability Company``, ``GmbH``, ``PJSC``...) with OpenSanctions' ``fingerprints`` (its curated table
   of company types in many languages, ``remove_types``);
3. transliteration to ASCII by ``anyascii`` (Cyrillic in BGN/PCGN-like spellings, the ones OFAC prints:
   Юрий -> Yuriy, Сергей -> Sergey; Greek after its digraphs ου, αυ, ευ, γγ, initial μπ/ντ are read as
   ou, av, ev, ng, b/d; Arabic, Hebrew, CJK and the rest by table);
4. legal forms removed again, now in Latin letters (``ooo``, ``llc``), spaces collapsed.

**Keys.** Each list name gives a *key*: its normalised tokens sorted. An individual's name with three or more
tokens also gives a *short* key, surname plus first given name (``PETROV, Ivan Sergeyevich`` ->
``ivan petrov``), because a screened name often lacks the patronymic or middle names. A query written in an
abjad (Arabic, Hebrew, Syriac: short vowels unwritten) is also compared by *skeleton*: both sides' keys with
vowels (a e i o u y w) removed and doubled letters collapsed (محمد -> mhmd; Muhammad -> mhmd).

**Score.** ``rapidfuzz.fuzz.token_sort_ratio`` of the query's and the name's normalised text (0-100: the
Indel similarity of the token-sorted strings), the best over the entry's names and keys. Token sorting makes
``LAST, First`` and ``First Last`` the same; the Indel distance absorbs misspellings and transliteration
variants. WRatio and token_set_ratio were rejected: they score 100 for a query that is a subset of a list name
(``bank`` against ``bank melli iran``), which floods the hits. A hit is a score at or above
:data:`THRESHOLD`.

**Exact pruning.** ``token_sort_ratio(a, b) == ratio(sort(a), sort(b))``, so the list's sorted keys are
computed once, deduplicated and ordered by length, and each query is scored with ``fuzz.ratio``
(``process.cdist``, all cores) only against keys whose length can reach the threshold: the Indel distance is
at least the length difference, so ``ratio <= 200 * min(la, lb) / (la + lb)``, and a key outside
``[la * T / (200 - T), la * (200 - T) / T]`` cannot score ``T``. The window is widened by one character on
each side against rounding; no pair at or above the threshold is skipped (the tests and
``benchmarks/bench_screening.py`` compare every hit with a full scan).
"""

from __future__ import annotations

import csv
import io
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import polars as pl

from emp_core.errors import EmpError

#: Hit threshold on token_sort_ratio (0-100), chosen on ``data/compliance/sanctions/labelled.csv`` (362 names,
#: 258 expected hits; ``tests/test_screening.py`` prints the figures). Precision / recall by threshold:
#: 80: 0.894 / 0.977; 85: 0.937 / 0.973; **88: 0.958 / 0.973**; 90: 0.972 / 0.957; 95: 0.987 / 0.899.
#: 88 has the best F1 (0.965): 85 finds no more true hits for six more false ones (hard negatives that share the
#: given name and most of the surname), 90 loses four true hits to drop four false ones.
THRESHOLD = 88.0
#: The short-name rule: one typo in a name of n characters scores 100 (1 - 1/n) under the ratio, below 88 up to
#: n = 8 ("KIN JONG" ~ "KIM JONG" 87.5, "HAMAZ" ~ "HAMAS" 80), and short names (acronyms, vessels, Korean
#: names) are common on the lists. So a query key of at most ``SHORT_NAME`` characters also matches a key at
#: Levenshtein distance at most 1 (one insertion, deletion or substitution, on the token-sorted keys), whatever
#: its score; the hit reports its ratio score.
SHORT_NAME = 10

SDN_COLUMNS = ("ent_num", "sdn_name", "sdn_type", "program", "title", "call_sign", "vess_type", "tonnage", "grt",
               "vess_flag", "vess_owner", "remarks")
ALT_COLUMNS = ("ent_num", "alt_num", "alt_type", "alt_name", "alt_remarks")
NULL = "-0-"
#: SDN_Type values; the null ``-0-`` means an entity (a company, an organisation).
SDN_TYPES = ("individual", "vessel", "aircraft", "entity")
ALT_TYPES = ("aka", "fka", "nka")
EOF_MARK = "\x1a"  # the real files end with a line holding only Ctrl-Z

HIT_SCHEMA = {"query_index": pl.Int64, "query": pl.String, "ent_num": pl.Int64, "matched_name": pl.String,
              "name_type": pl.String, "key_kind": pl.String, "score": pl.Float64, "sdn_type": pl.String,
              "program": pl.String}


class SanctionsFileError(EmpError):
    """A sanctions list file that cannot be loaded; nothing of it was used."""

    def __init__(self, path: object, line: int | None, problem: str) -> None:
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


# -- normalisation --------------------------------------------------------------------------------------------

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_NON_WORD = re.compile(r"[\W_]+")
_INITIAL_DOT = re.compile(r"(?<!\w)(\w)\.")
_APOSTROPHES = re.compile(r"['`´ʼʻ’‘]")
_ABJAD = re.compile(r"[\u0590-\u05FF\u0600-\u06FF\u0700-\u074F\u0750-\u077F\u08A0-\u08FF\uFB1D-\uFDFF\uFE70-\uFEFF]")
_VOWELS = re.compile(r"[aeiouyw]")
_DOUBLES = re.compile(r"(.)\1+")


_GREEK_DIGRAPHS = ((re.compile(r"[οό][υύ]"), "ou"), (re.compile(r"[αά][υύ]"), "av"), (re.compile(r"[εέ][υύ]"), "ev"),
                   (re.compile(r"[ηή][υύ]"), "iv"), (re.compile(r"γγ"), "ng"), (re.compile(r"\bμπ"), "b"),
                   (re.compile(r"\bντ"), "d"))


@lru_cache(maxsize=4096)
def _clean(text: str | None) -> str | None:
    """Lower case, apostrophes deleted, anything but letters and digits made a space, in the text's own
    script (no decomposition: й stays й); the cleaner fingerprints applies to names and to its legal forms."""
    if not text:
        return None
    text = _APOSTROPHES.sub("", unicodedata.normalize("NFKC", text).lower())
    text = _INITIAL_DOT.sub(r"\1", text)  # dotted abbreviations close up: L.L.C. -> llc, S.A. -> sa
    text = " ".join(_NON_WORD.sub(" ", text).split())
    return text or None


@lru_cache(maxsize=200_000)
def normalise(name: str) -> str:
    """The name as compared (module docstring, steps 1-4): lower-case ASCII words separated by one space,
    legal-form words removed; '' when nothing is left."""
    from anyascii import anyascii
    from fingerprints import remove_types

    text = _clean(name)
    if text is None:
        return ""
    text = remove_types(text, clean=_clean) or text
    if not text.isascii():
        for pattern, latin in _GREEK_DIGRAPHS:
            text = pattern.sub(latin, text)
        text = anyascii(text)
    text = " ".join(_NON_ALNUM.sub(" ", _APOSTROPHES.sub("", text).lower()).split())
    return (remove_types(text, clean=_clean) or text) if text else ""


def sort_tokens(text: str) -> str:
    """The words of ``text`` sorted (what token_sort_ratio compares)."""
    return " ".join(sorted(text.split()))


def is_abjad(name: str) -> bool:
    """Whether ``name`` holds letters of a script that leaves short vowels unwritten (Arabic, Hebrew, Syriac)."""
    return bool(_ABJAD.search(name or ""))


def skeleton(norm: str) -> str:
    """The consonant skeleton of a normalised name: vowels (a e i o u y w) removed per word, doubled letters
    collapsed, words sorted; a word that is all vowels is kept as it is."""
    words = []
    for w in norm.split():
        s = _DOUBLES.sub(r"\1", _VOWELS.sub("", w)) or w
        words.append(s)
    return " ".join(sorted(words))


# -- the list ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SanctionsList:
    """A loaded list. ``entries``: one row per ent_num (``ent_num, name, sdn_type, program, title, remarks``);
    ``names``: every name (``ent_num, name, name_type`` primary/aka/fka/nka); ``keys``: what is compared
    (``ent_num, name, name_type, key_kind`` full/short/skeleton, ``norm`` normalised text, ``key`` sorted)."""

    entries: pl.DataFrame
    names: pl.DataFrame
    keys: pl.DataFrame
    source: str = ""

    def __len__(self) -> int:
        return self.entries.height

    @cached_property
    def index(self) -> dict[str, _Bucket]:
        """The keys as :func:`screen` scans them (:func:`_buckets`), built on first use."""
        return _buckets(self)


def _read_rows(path: Path, ncols: int) -> list[tuple[int, list[str]]]:
    """(line number, fields) for each record of a headerless CSV; the trailing Ctrl-Z line skipped."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SanctionsFileError(path, None, f"cannot read the file ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = raw.decode("cp1252")  # OFAC's legacy files are Windows-1252
        except UnicodeDecodeError as exc:  # neither: say where, rather than load damaged names
            raise SanctionsFileError(path, None, f"neither UTF-8 nor Windows-1252: byte "
                                                 f"{raw[exc.start]:#04x} at offset {exc.start}") from None
    text = text.lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows, start = [], 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) == 1 and fields[0].strip() == EOF_MARK:
                continue
            if len(fields) != ncols:
                raise SanctionsFileError(path, line, f"{len(fields)} columns, expected {ncols}")
            rows.append((line, [_field(f) for f in fields]))
    except csv.Error as exc:
        raise SanctionsFileError(path, reader.line_num, f"not valid CSV ({exc})") from None
    if not rows:
        raise SanctionsFileError(path, None, "no records")
    return rows


def _field(field: str) -> str | None:
    value = field.strip()
    return None if value in (NULL, "") else value


def _int(path: Path, line: int, column: str, value: str | None) -> int:
    if value is None or not re.fullmatch(r"\d+", value):
        raise SanctionsFileError(path, line, f"{column} {value!r} is not a whole number")
    return int(value)


def load_sdn(sdn_path: str | Path, alt_path: str | Path | None = None) -> SanctionsList:
    """Load and validate ``sdn.csv`` (and ``alt.csv``) in OFAC's legacy layout (module docstring). Checks: the
    column count of every record, ``ent_num`` a whole number and unique, a name present, ``SDN_Type`` one of
    individual/vessel/aircraft or ``-0-`` (an entity); for aliases, ``ent_num`` and ``alt_num`` whole numbers,
    ``alt_num`` unique, ``alt_type`` aka/fka/nka, the ``ent_num`` present in the SDN file. Raises
    :class:`SanctionsFileError` (file, line, problem) before anything is returned."""
    sdn_path = Path(sdn_path)
    seen: dict[int, int] = {}
    entries = []
    for line, f in _read_rows(sdn_path, len(SDN_COLUMNS)):
        ent = _int(sdn_path, line, "ent_num", f[0])
        if ent in seen:
            raise SanctionsFileError(sdn_path, line, f"ent_num {ent} repeats the one on line {seen[ent]}")
        seen[ent] = line
        if not f[1]:
            raise SanctionsFileError(sdn_path, line, f"ent_num {ent} has no SDN_Name")
        kind = (f[2] or "entity").lower()
        if kind not in SDN_TYPES[:3] and f[2] is not None:
            raise SanctionsFileError(sdn_path, line, f"SDN_Type {f[2]!r} is not one of individual, vessel, "
                                     f"aircraft or {NULL} (entity)")
        entries.append({"ent_num": ent, "name": f[1], "sdn_type": kind, "program": f[3] or "", "title": f[4],
                        "remarks": f[11]})
    names = [{"ent_num": e["ent_num"], "name": e["name"], "name_type": "primary"} for e in entries]
    if alt_path is not None:
        alt_path = Path(alt_path)
        alt_seen: dict[int, int] = {}
        for line, f in _read_rows(alt_path, len(ALT_COLUMNS)):
            ent = _int(alt_path, line, "ent_num", f[0])
            alt = _int(alt_path, line, "alt_num", f[1])
            if alt in alt_seen:
                raise SanctionsFileError(alt_path, line, f"alt_num {alt} repeats the one on line {alt_seen[alt]}")
            alt_seen[alt] = line
            if ent not in seen:
                raise SanctionsFileError(alt_path, line, f"ent_num {ent} is not in {sdn_path.name}")
            kind = (f[2] or "").lower()
            if kind not in ALT_TYPES:
                raise SanctionsFileError(alt_path, line, f"alt_type {f[2]!r} is not one of aka, fka, nka")
            if not f[3]:
                raise SanctionsFileError(alt_path, line, f"alt_num {alt} has no alt_name")
            names.append({"ent_num": ent, "name": f[3], "name_type": kind})
    entry_frame = pl.DataFrame(entries, schema={"ent_num": pl.Int64, "name": pl.String, "sdn_type": pl.String,
                                                "program": pl.String, "title": pl.String, "remarks": pl.String})
    name_frame = pl.DataFrame(names, schema={"ent_num": pl.Int64, "name": pl.String, "name_type": pl.String})
    return SanctionsList(entry_frame, name_frame, build_keys(name_frame, entry_frame),
                         source=str(sdn_path) + (f" + {alt_path}" if alt_path is not None else ""))


def from_frames(entries: pl.DataFrame, names: pl.DataFrame, source: str = "") -> SanctionsList:
    """A list from frames already in memory (``entries``: ent_num, name, sdn_type, program; ``names``: ent_num,
    name, name_type), as :func:`load_sdn` builds it."""
    for col in ("title", "remarks"):
        if col not in entries.columns:
            entries = entries.with_columns(pl.lit(None, pl.String).alias(col))
    return SanctionsList(entries, names, build_keys(names, entries), source=source)


def _short(name: str) -> str | None:
    """Surname plus first given name of an individual written ``LAST, First Middle``, when that drops words."""
    if "," not in name:
        return None
    last, _, given = name.partition(",")
    given_words = normalise(given).split()
    last_norm = normalise(last)
    if len(given_words) < 2 or not last_norm:
        return None
    return f"{last_norm} {given_words[0]}"


def build_keys(names: pl.DataFrame, entries: pl.DataFrame) -> pl.DataFrame:
    """The comparison keys of every name (module docstring): full, short (individuals), skeleton."""
    kinds = dict(zip(entries["ent_num"].to_list(), entries["sdn_type"].to_list(), strict=True))
    rows = []
    for ent, name, ntype in names.select("ent_num", "name", "name_type").iter_rows():
        norm = normalise(name)
        if not norm:
            continue
        rows.append((ent, name, ntype, "full", norm))
        if kinds.get(ent) == "individual" and (short := _short(name)):
            rows.append((ent, name, ntype, "short", short))
    frame = pl.DataFrame(rows, schema={"ent_num": pl.Int64, "name": pl.String, "name_type": pl.String,
                                       "key_kind": pl.String, "norm": pl.String}, orient="row")
    frame = frame.with_columns(pl.col("norm").map_elements(sort_tokens, return_dtype=pl.String).alias("key"))
    skel = frame.filter(pl.col("key_kind") == "full").with_columns(
        pl.lit("skeleton").alias("key_kind"),
        pl.col("norm").map_elements(skeleton, return_dtype=pl.String).alias("key"))
    skel = skel.with_columns(pl.col("key").alias("norm"))
    return pl.concat([frame, skel]).unique(maintain_order=True)


# -- screening --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Bucket:
    """Distinct keys of one comparison kind, ordered by length, with the rows of ``keys`` behind each."""

    keys: list[str]
    lengths: np.ndarray
    rows: list[list[int]]


def _buckets(sanctions: SanctionsList) -> dict[str, _Bucket]:
    """The list's distinct keys by comparison group, each ordered by length (built once per list)."""
    out = {}
    keys = sanctions.keys.with_row_index("row")
    for group, kinds in (("latin", ("full", "short")), ("skeleton", ("skeleton",))):
        part = (keys.filter(pl.col("key_kind").is_in(kinds))
                .group_by("key", maintain_order=True).agg(pl.col("row"))
                .with_columns(pl.col("key").str.len_chars().alias("n")).sort("n", "key"))
        out[group] = _Bucket(part["key"].to_list(), part["n"].to_numpy(), part["row"].to_list())
    return out


def length_window(n: int, threshold: float) -> tuple[int, int]:
    """Key lengths that can reach ``threshold`` against a query of ``n`` characters under the Indel ratio
    (module docstring), widened by one on each side."""
    t = max(min(threshold, 100.0), 1e-9)
    return max(math.floor(n * t / (200.0 - t)) - 1, 0), math.ceil(n * (200.0 - t) / t) + 1


def _match(queries: list[str], bucket: _Bucket, threshold: float, workers: int, *,
           edits: bool = False) -> list[tuple[int, int, float]]:
    """(query position, key position, score) for every pair at or above ``threshold`` and, with ``edits``, every
    pair the short-name rule matches (:data:`SHORT_NAME`). A pair may come twice; the caller keeps one."""
    from rapidfuzz import fuzz, process
    from rapidfuzz.distance import Levenshtein

    out: list[tuple[int, int, float]] = []
    if not queries or not bucket.keys:
        return out
    by_len: dict[int, list[int]] = {}
    for i, q in enumerate(queries):
        if q:
            by_len.setdefault(len(q), []).append(i)
    for n, idx in by_len.items():
        if edits and n <= SHORT_NAME:  # the short-name rule: keys one edit away (their length n - 1 .. n + 1)
            a, b = np.searchsorted(bucket.lengths, n - 1, "left"), np.searchsorted(bucket.lengths, n + 1, "right")
            if a < b:
                far = process.cdist([queries[i] for i in idx], bucket.keys[a:b], scorer=Levenshtein.distance,
                                    score_cutoff=1, workers=workers, dtype=np.uint8)
                qi, ki = np.nonzero(far <= 1)
                out.extend((idx[q], a + k, fuzz.ratio(queries[idx[q]], bucket.keys[a + k]))
                           for q, k in zip(qi.tolist(), ki.tolist(), strict=True))
        lo, hi = length_window(n, threshold)
        a, b = np.searchsorted(bucket.lengths, lo, "left"), np.searchsorted(bucket.lengths, hi, "right")
        if a >= b:
            continue
        # uint8 scores (a quarter of float32's memory to scan); the cutoff one below the threshold, so a
        # score rounded down still passes, and every pass is re-scored exactly below
        scores = process.cdist([queries[i] for i in idx], bucket.keys[a:b], scorer=fuzz.ratio,
                               score_cutoff=max(threshold - 1.0, 0.0), workers=workers, dtype=np.uint8)
        qi, ki = np.nonzero(scores)
        if len(qi):
            exact = [fuzz.ratio(queries[idx[q]], bucket.keys[a + k]) for q, k in zip(qi, ki, strict=True)]
            out.extend((idx[q], a + k, s) for q, k, s in zip(qi.tolist(), ki.tolist(), exact, strict=True)
                       if s >= threshold)
    return out


def screen(names: Iterable[str], sanctions: SanctionsList, *, threshold: float = THRESHOLD,
           workers: int = -1) -> pl.DataFrame:
    """Screen ``names`` against the list: one row per (query, entry) scoring at or above ``threshold``, with the
    best-scoring name of the entry (columns of :data:`HIT_SCHEMA`; ``query_index`` is the name's position).
    An empty name matches nothing."""
    names = [n if isinstance(n, str) else "" for n in names]
    norms = [normalise(n) for n in names]
    uniq: dict[str, int] = {}
    for q in norms:
        uniq.setdefault(sort_tokens(q), len(uniq))
    ukeys = list(uniq)
    buckets = sanctions.index
    pairs = [("latin", q, k, s) for q, k, s in _match(ukeys, buckets["latin"], threshold, workers, edits=True)]
    abjad = {sort_tokens(norms[i]) for i, n in enumerate(names) if is_abjad(n)}
    if abjad:
        skel_src = sorted(abjad)
        skel_q = [skeleton(k) for k in skel_src]
        pairs += [("skeleton", uniq[skel_src[q]], k, s)
                  for q, k, s in _match(skel_q, buckets["skeleton"], threshold, workers)]
    return _hits(names, norms, ukeys, pairs, buckets, sanctions)


def _hits(names, norms, ukeys, pairs, buckets, sanctions) -> pl.DataFrame:
    """Pairs of (group, unique-query position, key position, score) fanned out to the queries and list rows
    behind them, the best row per (query, ent_num) kept."""
    if not pairs:
        return pl.DataFrame(schema=HIT_SCHEMA)
    qrows, krows, scores, kinds = [], [], [], []
    for group, q, k, s in pairs:
        for row in buckets[group].rows[k]:
            qrows.append(q)
            krows.append(row)
            scores.append(float(s))
            kinds.append(group)
    matches = pl.DataFrame({"uq": qrows, "row": krows, "score": scores, "group": kinds},
                           schema={"uq": pl.Int64, "row": pl.UInt32, "score": pl.Float64, "group": pl.String})
    keyed = [sort_tokens(n) for n in norms]
    position = {k: i for i, k in enumerate(ukeys)}
    queries = pl.DataFrame(
        {"query_index": list(range(len(names))), "query": names, "uq": [position[k] for k in keyed],
         "abjad": [is_abjad(n) for n in names]},
        schema={"query_index": pl.Int64, "query": pl.String, "uq": pl.Int64, "abjad": pl.Boolean})
    keys = sanctions.keys.with_row_index("row").select("row", "ent_num", pl.col("name").alias("matched_name"),
                                                       "name_type", "key_kind")
    entries = sanctions.entries.select("ent_num", "sdn_type", "program")
    out = (queries.filter(pl.col("uq").is_not_null())
           .join(matches, on="uq")
           .filter((pl.col("group") == "latin") | pl.col("abjad"))
           .join(keys, on="row").join(entries, on="ent_num", how="left")
           .sort(["query_index", "ent_num", "score", "key_kind"], descending=[False, False, True, False])
           .unique(["query_index", "ent_num"], keep="first", maintain_order=True))
    return out.select(list(HIT_SCHEMA)).cast(HIT_SCHEMA)


def brute_force_screen(names: Sequence[str], sanctions: SanctionsList, *, threshold: float = THRESHOLD,
                       workers: int = -1) -> pl.DataFrame:
    """The reference for :func:`screen`: every normalised query against every list key, unsorted, with
    ``rapidfuzz.process.cdist(scorer=fuzz.token_sort_ratio)`` (no dedupe, no pre-sorting, no length window),
    and the short-name rule against every key (``Levenshtein.distance`` on token-sorted strings); abjad queries
    also against every skeleton. Same columns as :func:`screen`."""
    from rapidfuzz import fuzz, process
    from rapidfuzz.distance import Levenshtein

    names = [n if isinstance(n, str) else "" for n in names]
    norms = [normalise(n) for n in names]
    keys = sanctions.keys.with_row_index("row")
    latin = keys.filter(pl.col("key_kind") != "skeleton")
    skel = keys.filter(pl.col("key_kind") == "skeleton")
    rows: list[tuple[int, int, float]] = []
    latin_norms = latin["norm"].to_list()
    scores = process.cdist(norms, latin_norms, scorer=fuzz.token_sort_ratio, score_cutoff=threshold,
                           workers=workers, dtype=np.float32)
    latin_rows = latin["row"].to_numpy()
    for q, k in zip(*np.nonzero(scores), strict=True):
        if norms[q]:
            rows.append((int(q), int(latin_rows[k]), float(fuzz.token_sort_ratio(norms[q], latin_norms[k]))))
    # the short-name rule, on every key: token-sorted query of at most SHORT_NAME characters, one edit away
    short = [i for i, n in enumerate(norms) if n and len(sort_tokens(n)) <= SHORT_NAME]
    edited: set[tuple[int, int]] = set()
    if short:
        far = process.cdist([norms[i] for i in short], latin_norms, scorer=Levenshtein.distance,
                            processor=sort_tokens, workers=workers, dtype=np.int32)
        for q, k in zip(*np.nonzero(far <= 1), strict=True):
            edited.add((short[q], int(latin_rows[k])))
            rows.append((short[q], int(latin_rows[k]), float(fuzz.token_sort_ratio(norms[short[q]],
                                                                                   latin_norms[k]))))
    abjad = [i for i, n in enumerate(names) if is_abjad(n) and norms[i]]
    if abjad:
        sq = [skeleton(norms[i]) for i in abjad]
        scores = process.cdist(sq, skel["norm"].to_list(), scorer=fuzz.token_sort_ratio, score_cutoff=threshold,
                               workers=workers, dtype=np.float32)
        skel_rows, skel_norms = skel["row"].to_numpy(), skel["norm"].to_list()
        for q, k in zip(*np.nonzero(scores), strict=True):
            rows.append((abjad[q], int(skel_rows[k]), float(fuzz.token_sort_ratio(sq[q], skel_norms[k]))))
    rows = [r for r in rows if r[2] >= threshold or (r[0], r[1]) in edited]
    if not rows:
        return pl.DataFrame(schema=HIT_SCHEMA)
    found = pl.DataFrame(rows, schema={"query_index": pl.Int64, "row": pl.UInt32, "score": pl.Float64},
                         orient="row")
    out = (found.join(pl.DataFrame({"query_index": list(range(len(names))), "query": names},
                                   schema={"query_index": pl.Int64, "query": pl.String}), on="query_index")
           .join(keys.select("row", "ent_num", pl.col("name").alias("matched_name"), "name_type", "key_kind"),
                 on="row")
           .join(sanctions.entries.select("ent_num", "sdn_type", "program"), on="ent_num", how="left")
           .sort(["query_index", "ent_num", "score", "key_kind"], descending=[False, False, True, False])
           .unique(["query_index", "ent_num"], keep="first", maintain_order=True))
    return out.select(list(HIT_SCHEMA)).cast(HIT_SCHEMA)


def precision_recall(hits: pl.DataFrame, expected: Sequence[int | None]) -> dict[str, float | int]:
    """Precision and recall of ``hits`` against ``expected`` (the ent_num each query should hit, None for a
    name that should hit nothing): a true positive is a hit on the expected entry; any other hit is a false
    positive; an expected entry not hit is a false negative."""
    want = {(i, e) for i, e in enumerate(expected) if e is not None}
    got = set(zip(hits["query_index"].to_list(), hits["ent_num"].to_list(), strict=True))
    tp, fp, fn = len(got & want), len(got - want), len(want - got)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / (tp + fn) if tp + fn else 1.0}


__all__ = ["ALT_COLUMNS", "HIT_SCHEMA", "SDN_COLUMNS", "SDN_TYPES", "THRESHOLD", "SanctionsFileError",
           "SanctionsList", "brute_force_screen", "from_frames", "load_sdn", "normalise", "precision_recall",
           "screen"]
