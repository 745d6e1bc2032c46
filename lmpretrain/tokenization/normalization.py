"""The text normalization every tokenizer of this toolkit applies first: NFKC, as transformers'
``BertJapaneseTokenizer`` word tokenizers do (``normalize_text=True``) and as the `tokenizers` pipeline without a word
segmenter does (``normalizers.NFKC``). ``nfkc`` is ``unicodedata.normalize``'s result, computed faster."""

from __future__ import annotations

from unicodedata import is_normalized, normalize

NORMALIZATION = "NFKC"

_NFKC_TABLE: dict[int, str] = {}


def nfkc(text: str) -> str:
    """``unicodedata.normalize("NFKC", text)``, faster where the text is not normalized already.

    CPython's NFKC is slow on lines that need it (in Japanese text: full-width ASCII, "…", ideographic spaces).
    Replacing each BMP character c by NFKC(c) first does not change the line's NFKC (NFKD(NFKC(c)) = NFKD(c), and
    equivalence is kept under concatenation), so when the replaced line is already in NFKC, it is the answer;
    otherwise (combining marks, characters outside the BMP) the full algorithm runs on it.
    """
    if is_normalized(NORMALIZATION, text):
        return text
    if not _NFKC_TABLE:
        for code in range(0x10000):
            if not 0xD800 <= code <= 0xDFFF and normalize(NORMALIZATION, chr(code)) != chr(code):
                _NFKC_TABLE[code] = normalize(NORMALIZATION, chr(code))
    replaced = text.translate(_NFKC_TABLE)
    return replaced if is_normalized(NORMALIZATION, replaced) else normalize(NORMALIZATION, replaced)
