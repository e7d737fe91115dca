"""Sanctions screening (emp_core/compliance/sanctions.py): the OFAC SDN loader on the shipped synthetic sample
and on malformed files, normalisation, the screener's hits on exact, transliterated and misspelled names, its
precision and recall on the labelled sample, and its exact pruning held against a plain scan of every pair."""

from __future__ import annotations

import csv
import random
import shutil

import polars as pl
import pytest
from rapidfuzz import fuzz

from emp_core.compliance import sanctions
from emp_core.compliance.sanctions import SanctionsFileError, load_sdn, normalise, screen
from emp_core.config import REPO_ROOT
from emp_core.errors import EmpError

SAMPLE = REPO_ROOT / "data" / "compliance" / "sanctions"


@pytest.fixture(scope="module")
def sdn():
    return load_sdn(SAMPLE / "sdn.csv", SAMPLE / "alt.csv")


@pytest.fixture(scope="module")
def labelled():
    return pl.read_csv(SAMPLE / "labelled.csv", schema_overrides={"expected_ent_num": pl.Int64})


def test_the_sample_loads_in_the_sdn_layout(sdn):
    raw = (SAMPLE / "sdn.csv").read_bytes()
    assert raw.endswith(b"\x1a") and b"-0- " in raw  # the real files' quirks are in the sample
    with (SAMPLE / "sdn.csv").open(encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f) if r != ["\x1a"]]
    assert len(sdn) == len(rows) == 60 and all(len(r) == 12 for r in rows)
    assert sdn.names.height == 60 + 23
    assert sorted(set(sdn.entries["sdn_type"])) == ["aircraft", "entity", "individual", "vessel"]
    row = sdn.entries.filter(pl.col("ent_num") == 2001).row(0, named=True)
    assert row["name"] == "GLOBAL STAR TRADING LLC" and row["sdn_type"] == "entity" and row["title"] is None
    assert set(sdn.names.filter(pl.col("ent_num") == 2015)["name_type"]) == {"primary", "nka"}


def test_the_real_files_windows_1252_and_crlf_load(tmp_path):
    sdn_path = tmp_path / "sdn.csv"
    sdn_path.write_bytes(b'36,"AEROCARIBBEAN AIRLINES",-0- ,"CUBA",-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- \r\n'
                         b'173,"ANGLO-CARIBBEAN CO., LTD.",-0- ,"CUBA",-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- \r\n'
                         b'306,"BANCO NACIONAL DE CUBA",-0- ,"CUBA",-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,'
                         b'"a.k.a. \'BNC\'; Caf\xe9."\r\n\x1a\r\n')
    loaded = load_sdn(sdn_path)
    assert loaded.entries["ent_num"].to_list() == [36, 173, 306]
    assert loaded.entries["remarks"].to_list() == [None, None, "a.k.a. 'BNC'; Café."]
    assert screen(["Anglo Caribbean Company Limited"], loaded)["ent_num"].to_list() == [173]


SDN_ROW = '9001,"DOE, John",individual,SDGT,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- '
BAD_SDN = [
    ('9001,"DOE, John",individual,SDGT,-0-', 2, "5 columns, expected 12"),
    (SDN_ROW.replace("9001", "90x1", 1), 2, "ent_num '90x1' is not a whole number"),
    (SDN_ROW, 2, "ent_num 9001 repeats the one on line 1"),
    (SDN_ROW.replace("9001", "9002", 1).replace("individual", "person"), 2, "SDN_Type 'person' is not one of"),
    (SDN_ROW.replace("9001", "9002", 1).replace('"DOE, John"', "-0- "), 2, "ent_num 9002 has no SDN_Name"),
    ('9002,"DOE, Jane,individual,SDGT,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ', 2, "not valid CSV"),
]


@pytest.mark.parametrize(("line", "lineno", "problem"), BAD_SDN)
def test_a_malformed_sdn_file_names_the_file_and_line(tmp_path, line, lineno, problem):
    path = tmp_path / "sdn.csv"
    path.write_text(SDN_ROW + "\r\n" + line + "\r\n", encoding="utf-8")
    with pytest.raises(SanctionsFileError) as err:
        load_sdn(path)
    assert isinstance(err.value, EmpError)
    assert str(path) in str(err.value) and problem in str(err.value)
    if problem != "not valid CSV":
        assert f"line {lineno}:" in str(err.value)


BAD_ALT = [
    ("9001,1,aka,\"DOE, Johnny\"", "4 columns, expected 5"),
    ("9009,1,aka,\"DOE, Johnny\",-0- ", "ent_num 9009 is not in sdn.csv"),
    ("9001,1,alias,\"DOE, Johnny\",-0- ", "alt_type 'alias' is not one of aka, fka, nka"),
    ("9001,x,aka,\"DOE, Johnny\",-0- ", "alt_num 'x' is not a whole number"),
    ("9001,1,aka,-0- ,-0- ", "alt_num 1 has no alt_name"),
]


@pytest.mark.parametrize(("line", "problem"), BAD_ALT)
def test_a_malformed_alt_file_names_the_file_and_line(tmp_path, line, problem):
    (tmp_path / "sdn.csv").write_text(SDN_ROW + "\r\n", encoding="utf-8")
    alt = tmp_path / "alt.csv"
    alt.write_text('9001,7,aka,"DOE, Jack",-0- \r\n' + line + "\r\n", encoding="utf-8")
    with pytest.raises(SanctionsFileError, match=rf"alt\.csv, line 2: {problem}"):
        load_sdn(tmp_path / "sdn.csv", alt)


def test_a_bad_last_line_fails_the_whole_load(tmp_path):
    """Nothing partially applied: 59 good records and one bad one give an error, not a 59-entry list."""
    shutil.copy(SAMPLE / "sdn.csv", tmp_path / "sdn.csv")
    text = (tmp_path / "sdn.csv").read_text(encoding="utf-8").rstrip("\x1a")
    (tmp_path / "sdn.csv").write_text(text + "4002,RA-1,airship,X,-0-,-0-,-0-,-0-,-0-,-0-,-0-,-0-\r\n",
                                      encoding="utf-8")
    with pytest.raises(SanctionsFileError, match=r"line 61: .*ent_num 4002 repeats"):
        load_sdn(tmp_path / "sdn.csv")
    with pytest.raises(SanctionsFileError, match="no records"):
        (tmp_path / "empty.csv").write_text("\x1a", encoding="utf-8")
        load_sdn(tmp_path / "empty.csv")
    with pytest.raises(SanctionsFileError, match="cannot read"):
        load_sdn(tmp_path / "missing.csv")


@pytest.mark.parametrize(("raw", "expected"), [
    ("VOLKOV, Dmitriy Sergeyevich", "volkov dmitriy sergeyevich"),
    ("Волков Дмитрий Сергеевич", "volkov dmitriy sergeevich"),
    ("ОБЩЕСТВО С ОГРАНИЧЕННОЙ ОТВЕТСТВЕННОСТЬЮ «РОСНЕФТЬ»", "rosneft"),
    ("Global Star Trading Limited Liability Company", "global star trading"),
    ("Müller GmbH", "muller"),
    ("O'Connell, Declan", "oconnell declan"),
    ("Ευάγγελος Μπακογιάννης", "evangelos bakogiannis"),
    ("Ελένη Σταυροπούλου", "eleni stavropoulou"),
    ("  --  ", ""),
])
def test_normalise(raw, expected):
    assert normalise(raw) == expected


def test_exact_transliterated_and_misspelled_names_are_found_and_clear_non_matches_are_not(sdn):
    found = {
        "SHCHERBAKOV, Sergey Nikolayevich": 1005,  # exact
        "Sergey Nikolayevich Shcherbakov": 1005,  # reordered
        "Щербаков Сергей Николаевич": 1005,  # Cyrillic
        "Δημήτριος Καραγιάννης": 1025,  # Greek, without the middle name
        "حسين كريم الزبيدي": 1020,  # Arabic (short vowels unwritten: by skeleton)
        "Sergei Shcherbakow": 1005,  # misspelled, without the patronymic
        "Iskander Defense Systems": 2009,  # misspelled, legal form dropped
        "ООО «Северный Поток Логистика»": 2002,  # Cyrillic with a Russian legal form
        "Northern Stream Logistics Limited": 2002,  # an alias, another legal form
    }
    hits = screen(list(found), sdn)
    got = dict(zip(hits["query"], hits["ent_num"], strict=True))
    assert got == found
    assert set(hits.columns) == set(sanctions.HIT_SCHEMA)
    assert hits.filter(pl.col("query") == "Щербаков Сергей Николаевич")["program"].item() == "RUSSIA-EO14024"
    clear = ["John Smith", "Acme Widgets Inc", "Maria Garcia", "Иван Иванов", "محمد أحمد", "", "Ltd"]
    assert screen(clear, sdn).is_empty()


def test_precision_and_recall_on_the_labelled_sample(sdn, labelled):
    assert labelled.height >= 200
    assert labelled.filter(pl.col("expected_ent_num").is_null()).height >= 100  # negatives, hard ones included
    hits = screen(labelled["query"].to_list(), sdn)
    expected = labelled["expected_ent_num"].to_list()
    pr = sanctions.precision_recall(hits, expected)
    got = set(zip(hits["query_index"].to_list(), hits["ent_num"].to_list(), strict=True))
    by_category = {}
    for cat in sorted(set(labelled["category"])):
        idx = [i for i, c in enumerate(labelled["category"]) if c == cat]
        pos = [i for i in idx if expected[i] is not None]
        by_category[cat] = (f"recall {sum((i, expected[i]) in got for i in pos) / len(pos):.3f}" if pos else
                            f"false hits {sum(any(g[0] == i for g in got) for i in idx)}/{len(idx)}")
    print(f"\nlabelled sample ({labelled.height} names, threshold {sanctions.THRESHOLD}): precision "
          f"{pr['precision']:.3f} recall {pr['recall']:.3f} (tp {pr['tp']}, fp {pr['fp']}, fn {pr['fn']}); "
          + "; ".join(f"{k}: {v}" for k, v in by_category.items()))
    assert pr["recall"] >= 0.95 and pr["precision"] >= 0.93
    for cat in ("exact", "reordered", "alias"):
        assert by_category[cat] == "recall 1.000", cat
    assert by_category["non_match"] == "false hits 0/50"


def _edits(a: str, b: str) -> int:
    """Levenshtein distance by the textbook dynamic programme (independent of rapidfuzz)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_one_typo_in_a_short_name_is_found_though_its_ratio_is_below_the_threshold(sdn):
    """'KIN CHOL' against 'KIM, Chol Su' (short key 'kim chol'): one substitution in 8 characters scores 87.5,
    under 88, and is still a hit; two typos are not."""
    hits = screen(["Kin Chol", "Kin Chul"], sdn)
    found = dict(zip(hits["query"].to_list(), hits["ent_num"].to_list(), strict=True))
    assert found.get("Kin Chol") == 1028 and "Kin Chul" not in found
    assert hits.filter(pl.col("query") == "Kin Chol")["score"].to_list() == [pytest.approx(87.5)]


def test_screening_keeps_every_pair_a_plain_scan_finds(sdn, labelled):
    """The oracle: every normalised query against every key of the list with fuzz.token_sort_ratio (skeletons
    for abjad queries), no index, no window; the screener's hits and scores must be the same."""
    queries = labelled["query"].to_list()
    keys = sdn.keys.to_dicts()
    for threshold in (75.0, sanctions.THRESHOLD, 95.0):
        want = {}
        for i, q in enumerate(queries):
            n = normalise(q)
            if not n:
                continue
            for k in keys:
                if k["key_kind"] == "skeleton":
                    if not sanctions.is_abjad(q):
                        continue
                    score = fuzz.token_sort_ratio(sanctions.skeleton(n), k["key"])
                else:
                    score = fuzz.token_sort_ratio(n, k["norm"])
                    # the short-name rule: a short query one edit from the key matches whatever its score
                    q_sorted, k_sorted = " ".join(sorted(n.split())), " ".join(sorted(k["norm"].split()))
                    if len(q_sorted) <= sanctions.SHORT_NAME and _edits(q_sorted, k_sorted) <= 1:
                        score = max(score, 1000.0)  # marked: counted as a hit, reported with its ratio below
                if score >= threshold:
                    real = fuzz.token_sort_ratio(n, k["norm"]) if score == 1000.0 else score
                    want[(i, k["ent_num"])] = max(want.get((i, k["ent_num"]), 0.0), real)
        hits = screen(queries, sdn, threshold=threshold)
        got = {(i, e): s for i, e, s in hits.select("query_index", "ent_num", "score").iter_rows()}
        assert got.keys() == want.keys(), threshold
        assert all(abs(got[p] - want[p]) < 1e-9 for p in want)


def test_the_length_window_never_excludes_a_pair_over_the_threshold():
    """Pairs made near the bound (b is a with letters appended or cut): any scoring at least the threshold has a
    length inside the window."""
    rng = random.Random(7)
    near = 0
    for _ in range(20_000):
        a = "".join(rng.choice("abcdefghij ") for _ in range(rng.randint(1, 40)))
        k = rng.randint(0, 12)
        b = a + "x" * k if rng.random() < 0.5 else a[:max(len(a) - k, 1)]
        t = rng.choice([60.0, 80.0, 88.0, 95.0, 100.0])
        if fuzz.ratio(a, b) >= t:
            lo, hi = sanctions.length_window(len(a), t)
            assert lo <= len(b) <= hi, (a, b, t)
            near += lo + 1 >= len(b) or len(b) >= hi - 1
    assert near > 100  # the bound itself was reached, not only pairs far inside it
    assert sanctions.length_window(20, 88.0) == (14, 27)  # floor(20*88/112 = 15.7) - 1, ceil(20*112/88 = 25.5) + 1


def test_random_lists_match_the_brute_force(tmp_path):
    """Screen random names against a random list: the same hits as sanctions.brute_force_screen, which scores
    every pair with cdist(token_sort_ratio)."""
    rng = random.Random(11)
    syll = ["ka", "ri", "mo", "sha", "vol", "kov", "al", "din", "ez", "ra", "nu", "tek"]

    def name() -> str:
        return " ".join("".join(rng.choice(syll) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 3)))

    entries = pl.DataFrame({"ent_num": list(range(400)), "name": [name().upper() for _ in range(400)],
                            "sdn_type": rng.choices(["individual", "entity"], k=400), "program": "X"})
    names = entries.select("ent_num", "name", pl.lit("primary").alias("name_type"))
    lst = sanctions.from_frames(entries, names)
    queries = [name() for _ in range(300)]
    for threshold in (70.0, 85.0):
        ours = screen(queries, lst, threshold=threshold).select("query_index", "ent_num", "score")
        brute = sanctions.brute_force_screen(queries, lst, threshold=threshold).select(
            "query_index", "ent_num", "score")
        assert not ours.is_empty()
        assert ours.sort("query_index", "ent_num").equals(brute.sort("query_index", "ent_num"))


def test_a_file_in_neither_utf8_nor_windows_1252_is_refused_with_the_offset(tmp_path):
    from emp_core.compliance.sanctions import SanctionsFileError, load_sdn

    bad = tmp_path / "sdn.csv"
    bad.write_bytes(b'1001,"VOLKOV, Dmitriy",individual,RUSSIA-EO14024,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,\x81x\r\n')
    with pytest.raises(SanctionsFileError, match=r"neither UTF-8 nor Windows-1252: byte 0x81 at offset"):
        load_sdn(bad)
