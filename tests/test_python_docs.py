"""The built-in text corpus (tasks/text/python_docs.py): which docstring text is kept, the document layout
it writes, and `--data python-docs` in the CLI's text loader."""

from __future__ import annotations

import textwrap

import pytest

from tasks.text import python_docs
from tasks.text.corpus import iter_sentences

PROSE = "This function returns the number of apples that the farmer keeps in the barn."


def test_prose_paragraphs_keep_prose_and_join_lines():
    doc = "Short title.\n\nThis function returns the number of apples\nthat the farmer keeps in the barn."
    assert python_docs.prose_paragraphs(doc) == [PROSE]  # the title is under 8 words


@pytest.mark.parametrize("paragraph", [
    ">>> apples = count_apples(barn)\n>>> print(apples, 'apples are kept in this barn today')",
    "Arguments:\n    barn -- the barn in which the farmer keeps all of the apples",
    "x = 1; y = 2; z = 3; w = 4; q = 5; r = 6; s = 7; t = 8; u = 9; v = 10; a = 11",
    "$ python -m apples --count the number of apples in the barn of the farmer",
])
def test_prose_paragraphs_drop_code_examples_and_symbols(paragraph):
    assert python_docs.prose_paragraphs(paragraph) == []


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


def test_write_corpus_one_document_per_module(tmp_path):
    root = tmp_path / "lib"
    _write(root / "apples.py", f'''\
        """{PROSE}"""

        class Barn:
            """A barn is a large farm building that is used for storing the apples of the farmer."""

            def count(self):
                """Count every apple in this barn and return the total number that was found inside."""
        ''')
    pears = "Pears are sweet fruits that grow on trees in the gardens of many farmers."
    _write(root / "pears" / "__init__.py", f'"""{pears}"""\n')
    _write(root / "test" / "test_apples.py", f'"""{PROSE} (a test suite: skipped)"""\n')
    _write(root / "_private.py", f'"""{PROSE} (private: skipped)"""\n')
    _write(root / "broken.py", f'"""{PROSE}"""\ndef (:\n')  # cannot be parsed: skipped
    _write(root / "nodocs.py", "x = 1\n")
    out = tmp_path / "cache" / "corpus.txt"
    counts = python_docs.write_corpus(out, root=root)

    sentences = list(iter_sentences(out, layout="plain"))
    assert [s for s, _ in sentences] == [
        PROSE,
        "A barn is a large farm building that is used for storing the apples of the farmer.",
        "Count every apple in this barn and return the total number that was found inside.",
        "Pears are sweet fruits that grow on trees in the gardens of many farmers.",
    ]
    assert [new_doc for _, new_doc in sentences] == [True, False, False, True]
    assert counts == {"files": 3, "documents": 2, "paragraphs": 4,
                      "words": sum(len(s.split()) for s, _ in sentences)}
    assert not list(out.parent.glob("*.tmp"))  # the temporary file was renamed, not left behind


def test_write_corpus_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="standard library folder not found"):
        python_docs.write_corpus(tmp_path / "out.txt", root=tmp_path / "nowhere")


def test_cli_text_files_builds_the_corpus_once(tmp_path, monkeypatch):
    from data2vec.study.data import text_files

    root = tmp_path / "lib"
    _write(root / "apples.py", f'"""{PROSE}"""\n')
    monkeypatch.setattr(python_docs, "stdlib_dir", lambda: root)
    monkeypatch.setenv("DATA2VEC_CACHE", str(tmp_path / "cache"))
    (path,) = text_files("python-docs")
    assert path.parent == tmp_path / "cache" and path.read_text(encoding="utf-8") == PROSE + "\n\n"
    stamp = path.stat().st_mtime_ns
    assert text_files("python-docs") == [path] and path.stat().st_mtime_ns == stamp  # cached, not rebuilt


@pytest.mark.slow  # reads the whole standard library (~5 s)
def test_real_standard_library_gives_english_text(tmp_path):
    counts = python_docs.write_corpus(tmp_path / "docs.txt")
    assert counts["documents"] > 100 and counts["words"] > 100_000
    text = (tmp_path / "docs.txt").read_text(encoding="utf-8")
    assert " the " in text and ">>>" not in text
