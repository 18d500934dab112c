"""Legacy naming rules (spec 01 §1.4-1.5) and the defects fixed on purpose."""

from __future__ import annotations

import pytest

from services.ingest.naming import (
    project_folder_name,
    sanitize_component,
    sanitize_member_path,
    unique_name,
)


@pytest.mark.parametrize(
    ("archive", "project"),
    [
        # The legacy examples, checked against the legacy code by the spec authors.
        ("13_Camille_Projet.zip", "13 Camille"),
        ("Camille_Dupont_2024.zip", "Camille Dupont"),
        ("Camille_2024.zip", "Camille"),
        ("12_Project_Camille.zip", "12 Project"),
        ("Projet_Camille_final.zip", "Projet Camille final"),
        ("A&B_camille.rar", "A_B camille"),
        ("__.zip", "projet_sans_nom"),
        ("Camille_camille.zip", "Camille"),
        ("Camille.7z", "Camille"),
        ("Some  spaced__name.zip", "Some spaced name"),
        # Fixed: the whole archive suffix goes (legacy: "foo.tar"; such archives were never found).
        ("foo.tar.gz", "foo"),
        ("13_Camille_x.tar.xz", "13 Camille"),
        ("Camille_Dupont.tgz", "Camille Dupont"),
        ("a.b.zip", "a.b"),
    ],
)
def test_project_folder_name_keeps_legacy_rules(archive: str, project: str) -> None:
    assert project_folder_name(archive) == project


@pytest.mark.parametrize(
    ("raw", "safe", "reason"),
    [
        ("../../etc/passwd", "etc/passwd", "path_traversal"),
        ("/abs/path.mp4", "abs/path.mp4", "absolute_path"),
        ("a/./b/../c.mp4", "a/b/c.mp4", "path_traversal"),
        ("a:b?c*.mp4", "a_b_c_.mp4", "unsafe_characters"),
        (" spaced .mp4 ", "spaced .mp4", "unsafe_characters"),
        ("con.txt", "safe_con.txt", "reserved_name"),
        ("dir/ok.mp4", "dir/ok.mp4", ""),
        ("./dir//ok.mp4", "dir/ok.mp4", ""),
        ("tab\there.txt", "tabhere.txt", "control_characters"),
        ("..", "sanitized_file", "path_traversal"),
        ("...", "sanitized_file", "unsafe_characters"),
        # Fixed defects:
        (".DS_Store", ".DS_Store", ""),  # leading dots kept (legacy: "DS_Store")
        ("._clip.mov", "._clip.mov", ""),
        ("..\\..\\evil.mp4", "evil.mp4", "path_traversal"),  # backslash separates folders
        ("C:\\Windows\\evil.txt", "Windows/evil.txt", "absolute_path"),
        ("nul.tar.gz", "safe_nul.tar.gz", "reserved_name"),  # Windows reserves it too
        ("．．／．．／x.mp4", "x.mp4", "path_traversal"),  # full-width dots and slash (NFKC)
    ],
)
def test_member_paths_are_sanitised(raw: str, safe: str, reason: str) -> None:
    result = sanitize_member_path(raw)
    assert result.path == safe
    assert result.reason == reason
    assert result.changed == bool(reason)
    assert all(part not in ("", ".", "..") for part in result.parts)


def test_long_names_are_cut_in_bytes_keeping_the_extension() -> None:
    name = "é" * 200 + ".mp4"  # 404 bytes in UTF-8, 204 characters
    cut, issues = sanitize_component(name)
    assert issues == {"name_too_long"}
    assert cut.endswith(".mp4")
    assert len(cut.encode()) <= 255
    cut.encode().decode()  # never a split character
    long_path = "/".join(["d" * 200] * 30) + "/f.txt"
    result = sanitize_member_path(long_path)
    assert len(result.path) <= 4096
    assert result.reason == "name_too_long"


def test_unique_name_adds_a_counter_before_the_extension() -> None:
    taken = {"a.mp4", "a_2.mp4", ".hidden"}
    assert unique_name("a.mp4", taken.__contains__) == "a_3.mp4"
    assert unique_name("b.mp4", taken.__contains__) == "b.mp4"
    assert unique_name(".hidden", taken.__contains__) == ".hidden_2"
