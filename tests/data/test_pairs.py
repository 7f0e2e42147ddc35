"""Labelled pairs files: separators, headers, comments, the group column, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ghostfacenets.data.pairs import PairsFileError, parse_label, read_labelled_pairs


def test_labels() -> None:
    assert [parse_label(t) for t in ("1", " Yes ", "SAME", "genuine", "0", "no", "impostor", "maybe", "")] == [
        True,
        True,
        True,
        True,
        False,
        False,
        False,
        None,
        None,
    ]


def test_separators_header_comments_and_root(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("file_x,file_y,Decision\n# a comment\nx.jpg,y.jpg,Yes\nx.jpg,z.jpg,No\n")
    pairs = read_labelled_pairs(tmp_path / "a.csv")
    assert pairs.images_a == [tmp_path / "x.jpg"] * 2 and pairs.images_b == [tmp_path / "y.jpg", tmp_path / "z.jpg"]
    assert pairs.issame.tolist() == [True, False] and pairs.groups is None
    (tmp_path / "b.tsv").write_text("p q.jpg\tr.jpg\t1\n")
    assert read_labelled_pairs(tmp_path / "b.tsv", root="/data").images_a == [Path("/data/p q.jpg")]
    (tmp_path / "c.txt").write_text("x.jpg y.jpg 0\n")
    assert read_labelled_pairs(tmp_path / "c.txt").issame.tolist() == [False]


def test_group_column(tmp_path: Path) -> None:
    (tmp_path / "g.csv").write_text("a,b,same,site,race\nx.jpg,y.jpg,1,s1,African\nx.jpg,z.jpg,0,s2,Asian\n")
    pairs = read_labelled_pairs(tmp_path / "g.csv", group_column="race")
    assert pairs.groups == ["African", "Asian"] and pairs.issame.tolist() == [True, False]
    assert read_labelled_pairs(tmp_path / "g.csv").issame.tolist() == [True, False]  # the header names 5 columns
    assert read_labelled_pairs(tmp_path / "g.csv", group_column="site").groups == ["s1", "s2"]


@pytest.mark.parametrize(
    "text, group, message",
    [
        ("x.jpg,y.jpg,1\n", "race", "header naming the group column 'race'"),
        ("a,b,label,race\nx.jpg,y.jpg,1\n", "race", "line 2: expected .* and column 'race' \\(4 fields\\)"),
        ("a,b,label,race\nx.jpg,y.jpg,1,\n", "race", "line 2: empty group"),
        ("x.jpg,y.jpg,1\nx.jpg,y.jpg,perhaps\n", None, "line 2"),
        ("# nothing\n", None, "no pairs"),
        ("a,b,label\n", None, "no pairs"),
    ],
)
def test_errors(tmp_path: Path, text: str, group: str | None, message: str) -> None:
    (tmp_path / "p.csv").write_text(text)
    with pytest.raises(PairsFileError, match=message):
        read_labelled_pairs(tmp_path / "p.csv", group_column=group)
