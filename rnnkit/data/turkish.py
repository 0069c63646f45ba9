"""The Turkish Web Treebank (TWT; Kayadelen, Öztürel & Bohnet, LREC 2020): part-of-speech
tagging on real, hand-annotated text.

The data ships in the PyPI package ``turkish-treebanks`` (Apache 2.0), installed with
``--no-deps`` (its reader needs protobuf; rnnkit reads the files itself). The wheel puts two
CoNLL-U files in ``site-packages/data/``, beside the package ``turkish_treebanks``:

- ``web.conllu``: 2,541 sentences from forums and blogs; ``wiki.conllu``: 2,310 from
  Wikipedia. 81,370 tokens in all.
- Tokens are inflectional groups: a word with a derivation is split where the derivation
  begins (``Açık la nma yan`` for *Açıklanmayan*), each part with its own tag, joined back by
  ``SpaceAfter=No``. No multiword-token lines, no empty nodes.
- UPOS (UD v1 names: ``CONJ``, ``PRT``; 14 tags, 33,817 NOUN to 3 AFFIX) and a finer XPOS
  (``NN``, ``VB``, ``NNP`` ...); either can be the tag column (``data.column``).

The split is the package's own (``turkish_treebanks.read``): in each file, sentence i is test
when ``i % 10 == 9``, development (our validation) when ``i % 10 == 8``, training otherwise:
3,881 / 485 / 485 sentences.
"""

from __future__ import annotations

from pathlib import Path

from .conllu_io import read_conllu
from .packages import package_dir
from .text import TaggedSentence

PACKAGE = "turkish-treebanks==1.0.0"
SECTIONS = ("web", "wiki")
_MISSING = (f"Turkish Web Treebank not found: install it with `pip install --no-deps {PACKAGE}` "
            f"(`make demo` and `make test` do)")


def twt_files() -> dict[str, Path]:
    """``{"web": path, "wiki": path}`` of the installed treebank's CoNLL-U files.

    Raises:
        FileNotFoundError: the package is not installed, or lacks a file.
    """
    root = package_dir("turkish_treebanks", _MISSING).parent / "data"
    paths = {section: root / f"{section}.conllu" for section in SECTIONS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"Turkish Web Treebank incomplete: {', '.join(missing)} "
                                f"missing; reinstall it with `pip install --no-deps "
                                f"--force-reinstall {PACKAGE}`")
    return paths


def load_twt(column: str = "upos") -> dict[str, list[TaggedSentence]]:
    """TWT as ``{"train", "val", "test"}`` lists of sentences tagged with ``column`` (``upos``
    or ``xpos``), split as the package splits it (see the module doc); web before wiki."""
    splits: dict[str, list[TaggedSentence]] = {"train": [], "val": [], "test": []}
    for path in twt_files().values():
        for i, sentence in enumerate(read_conllu(path, column=column)):
            part = "test" if i % 10 == 9 else "val" if i % 10 == 8 else "train"
            splits[part].append(sentence)
    return splits
