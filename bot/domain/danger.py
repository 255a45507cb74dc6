"""Danger words: violence, threats, suicide, no roof tonight, no food, a child in danger, a
medical emergency, a cry for help. A citizen's message that matches makes their ticket
urgent, tells every on-duty staff member at once, and gives the person the emergency numbers
of what was found (``bot.flows.escalation``).

What is matched is data: one lexicon per language in ``bot/data/danger/<lang>.yaml``, read
when a message is first checked (nothing is loaded or registered by importing this module).
Every lexicon is tried on every message: people often write in a language other than the
one they chose. A message goes through three steps:

1. **Spelling** (all languages): lower case, no accents, one letter for doubled ones in
   words of three letters or more ("frappé", "frapé", "FRAPPEE" are one word),
   apostrophes and punctuation as spaces, Arabic and Persian letter variants unified,
   Cyrillic apostrophes kept inside the word, laughing emojis read as "lol".
2. **The lexicon's own spelling rules**: short forms glued to their word ("m a", "ma" and
   "m'a" all become ``ma``), SMS words written out ("jsuis", "chui" → "je suis", "g" →
   "j'ai", "jveux" → "je veux"), negation particles dropped ("je n'ai" = "j'ai"), and words
   of six letters or more one typo away from one of the lexicon's ``typos`` targets
   corrected ("sucide" → "suicide"; rapidfuzz): never the first letter, never a word the
   lexicon's entries use or it keeps as it is.
3. **Patterns** per category, written in the lexicon with the same spelling (so the author
   writes "il m'a frappée" and the rules do the rest), then **exclusions**: idioms that are
   not danger ("rue Victor Hugo", "mort de rire", "ce formulaire me tue"). An exclusion
   cancels only the danger words it overlaps: "je suis à la rue Victor Hugo, il m'a
   frappée" still alerts, for violence.

Pattern syntax, one entry a line, atoms separated by spaces: a word; ``a|b`` one of them;
``frapp*`` a word beginning so (``*ضربني`` ending so); ``{set}`` one of the lexicon's named
sets; ``[a|b]`` optional; ``!{set}`` or ``!a|b`` one word that is none of them; ``..`` up to
two words, ``...`` up to four, ``..N`` up to N.

``tests/data/danger/*.tsv`` is a corpus written apart from the lexicons (a third held out);
``bench/danger.py`` prints recall and false alarms per language and category.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import yaml
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

VIOLENCE, THREAT, SUICIDE, STREET, HUNGER, CHILD, MEDICAL, DISTRESS = (
    "violence", "threat", "suicide", "street", "hunger", "child", "medical", "distress",
)
CATEGORIES: tuple[str, ...] = (
    VIOLENCE, THREAT, SUICIDE, STREET, HUNGER, CHILD, MEDICAL, DISTRESS,
)
# fa covers Persian and Dari (one script, most words shared).
LANGUAGES: tuple[str, ...] = ("fr", "en", "ar", "es", "pt", "ro", "uk", "ru", "pl", "tr", "fa")
DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "danger"

# The numbers each category calls for, shown in ``NUMBER_ORDER`` ("food": where to find
# food aid). ``bot.flows.escalation.emergency_numbers`` words them.
NUMBERS: dict[str, tuple[str, ...]] = {
    VIOLENCE: ("17", "3919"),
    THREAT: ("17",),
    SUICIDE: ("3114",),
    STREET: ("115",),
    HUNGER: ("115", "food"),
    CHILD: ("119",),
    MEDICAL: ("15", "114"),
    DISTRESS: ("17", "114"),
}
NUMBER_ORDER: tuple[str, ...] = ("17", "15", "114", "3919", "3114", "119", "115", "food")

# Channels on which Relais may still send the numbers to a person who said STOP: the
# provider lets the message through (Relais's own opt-out is what holds everything else).
NUMBERS_AFTER_STOP_CHANNELS = frozenset({"sms", "telegram"})

FUZZY_MIN_LENGTH = 6  # shorter words are too close to other words to correct
FUZZY_LONG = 9  # from this length, two typos are corrected

# -- spelling shared by every language --------------------------------------------------------

_LAUGHS = "😂🤣😅😆😹😁😄😜😝🙃"  # read as "lol": a joke, not a cry for help
_LETTERS = str.maketrans({
    **{c: " lol " for c in _LAUGHS},
    "ł": "l", "ı": "i", "ß": "ss", "œ": "oe", "æ": "ae", "ø": "o", "đ": "d", "ð": "d",
    "þ": "th", "ħ": "h",
    # Arabic and Persian variants of one letter; Arabic-Indic and Persian digits.
    "ى": "ي", "ی": "ي", "ې": "ي", "ك": "ک", "ة": "ه", "ۀ": "ه", "ـ": "", "\u200c": "",
    "\u200d": "", "\u200f": "", "\u200e": "",
    **{chr(0x0660 + d): str(d) for d in range(10)},
    **{chr(0x06F0 + d): str(d) for d in range(10)},
})
_CYRILLIC_APOSTROPHE = re.compile(r"(?<=[\u0400-\u04ff])['’ʼ`´](?=[\u0400-\u04ff])")
_NOT_WORD = re.compile(r"[\W_]+")
_DOUBLED = re.compile(r"([^\W\d_])\1+")
_VOWELS = frozenset("aeiouyh")


def base_tokens(text: str) -> list[str]:
    """The words of ``text`` as every lexicon sees them (step 1 above)."""
    text = _CYRILLIC_APOSTROPHE.sub("", text)
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    bare = unicodedata.normalize("NFC", bare).casefold().translate(_LETTERS)
    return [_DOUBLED.sub(r"\1", word) if len(word) > 2 else word
            for word in _NOT_WORD.sub(" ", bare).split()]


def normalise(text: str) -> str:
    """``"Il M’A FRAPPÉE !!"`` → ``"il m a frape"`` (before any lexicon's own rules)."""
    return " ".join(base_tokens(text))


# -- lexicons -------------------------------------------------------------------------------


class LexiconError(ValueError):
    """A lexicon file that cannot be used (its path and the entry are in the message)."""


@dataclass(frozen=True)
class Word:
    """One word of a message after a lexicon's rules; ``first``..``last`` are the indexes of
    the message words it stands for."""

    text: str
    first: int
    last: int


@dataclass(frozen=True, eq=False)  # hashed by identity (typo corrections are cached)
class Lexicon:
    language: str
    spelling: dict[str, tuple[str, ...]]  # one word -> the words it stands for
    drop: frozenset[str]  # words that change nothing for danger ("ne")
    clitics: frozenset[str]  # glued to a following vowel: "m a" -> "ma"
    expand: dict[str, str]  # written out before a vowel: "j" -> "je" ("j'ai" -> "je ai")
    split_prefixes: dict[str, str]  # "jveux" -> "je veux"; "jarrive" -> "je arrive"
    split_known: bool  # split only before a word of the lexicon ("وما" -> "و ما")
    keep: frozenset[str]  # never corrected
    patterns: tuple[tuple[str, re.Pattern[str]], ...] = ()  # (category, all its entries)
    exclusions: re.Pattern[str] | None = None
    vocabulary: tuple[str, ...] = ()  # the words typos are corrected to ("suicide")
    known: frozenset[str] = frozenset()  # every word of the entries: never corrected

    def words(self, tokens: Sequence[str], *, correct: bool = True) -> list[Word]:
        """The message's words after this lexicon's spelling rules (step 2 above)."""
        words = _glue([Word(t, i, i) for i, t in enumerate(tokens)], self.clitics,
                      self.expand)
        out: list[Word] = []
        for word in words:
            replaced = self.spelling.get(word.text) or self._split(word.text)
            if replaced is None and correct:
                replaced = (self.correct(word.text),)
            out.extend(Word(text, word.first, word.last) for text in replaced or (word.text,)
                       if text not in self.drop)
        return out

    def _split(self, word: str) -> tuple[str, ...] | None:
        """"jveux" → ("je", "veux"); "jarrive" → ("je", "arrive") when "arrive" is a word
        of the lexicon (a short form glued to its verb)."""
        for head, full in self.split_prefixes.items():
            rest = word[len(head):]
            if not word.startswith(head) or len(rest) < 2 or not rest.isalnum():
                continue
            if self.split_known:
                if rest in self.known:
                    return (full, *self.spelling.get(rest, (rest,)))
            elif rest[0] not in _VOWELS or (len(rest) >= 4 and rest in self.known):
                return (full, *self.spelling.get(rest, (rest,)))
        return None

    def correct(self, word: str) -> str:
        """``word``, or the lexicon word it is one typo away from (two for long words)."""
        return _correct(self, word)


def _glue(words: list[Word], clitics: frozenset[str], expand: dict[str, str]) -> list[Word]:
    """A clitic ("m", "qu"…) glued to the next word when that begins with a vowel ("m a" →
    "ma"; a clitic in another script, such as Persian "می", to any word); an expanded one
    written out ("j ai" → "je ai")."""
    out: list[Word] = []
    index = 0
    while index < len(words):
        word = words[index]
        nxt = words[index + 1] if index + 1 < len(words) else None
        if nxt is not None and (nxt.text[:1] in _VOWELS or not word.text.isascii()):
            if word.text in expand:
                out.append(Word(expand[word.text], word.first, word.last))
                index += 1
                continue
            if word.text in clitics:
                out.append(Word(word.text + nxt.text, word.first, nxt.last))
                index += 2
                continue
        out.append(word)
        index += 1
    return out


@lru_cache(maxsize=65536)
def _correct(lexicon: Lexicon, word: str) -> str:
    if len(word) < FUZZY_MIN_LENGTH or word in lexicon.keep or not word.isalpha():
        return word
    if word in lexicon.known:
        return word
    limit = 2 if len(word) >= FUZZY_LONG else 1
    candidates = [w for w in lexicon.vocabulary if w[0] == word[0] and
                  abs(len(w) - len(word)) <= limit]
    best = process.extractOne(word, candidates, scorer=Levenshtein.distance,
                              score_cutoff=limit)
    return best[0] if best is not None else word


def _canonical(lexicon: Lexicon, text: str) -> str:
    """A lexicon's own words, spelled as messages will be after its rules."""
    return " ".join(w.text for w in lexicon.words(base_tokens(text), correct=False))


_GAP = re.compile(r"\.\.(\.?)(\d*)$")
_OPEN, _CLOSE = "([{", ")]}"


def _gap(atom: str, capture: bool = False) -> str | None:
    """``..`` up to two words, ``...`` up to four, ``..N`` up to N; captured in exclusions,
    whose own words are only those outside their gaps."""
    found = _GAP.match(atom)
    if found is None:
        return None
    words = rf"(?: \S+){{0,{int(found.group(2) or (4 if found.group(1) else 2))}}}"
    return f"({words})" if capture else words


def _split(text: str, separator: str) -> list[str]:
    """``text`` cut at ``separator`` (a space or ``|``) outside brackets."""
    parts, depth, current = [], 0, []
    for char in text:
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
        if depth == 0 and (char == separator or (separator == " " and char.isspace())):
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in (part.strip() for part in parts) if p]


_LITERAL = re.compile(r"[\w ]+")


def _alternation(regexes: Iterable[str]) -> str:
    """One regex for several: plain words share their beginnings (a trie), which keeps
    the expressions short enough to compile quickly."""
    literals = sorted(r for r in regexes if _LITERAL.fullmatch(r))
    others = sorted((r for r in regexes if not _LITERAL.fullmatch(r)), key=len, reverse=True)
    parts = ([_trie(literals)] if literals else []) + others
    return parts[0] if len(parts) == 1 and not others and _LITERAL.fullmatch(parts[0]) \
        else "(?:" + "|".join(parts) + ")"


def _trie(words: list[str]) -> str:
    """``["frappe", "frapper", "fraise"]`` → ``fra(?:ppe(?:r)?|ise)``; at a word's end the
    regex prefers the longer one, as a sorted alternation would."""
    if len(words) == 1:
        return words[0]
    if "" in words:
        rest = [w for w in words if w]
        inner = _trie(rest)
        return f"(?:{inner})?" if len(rest) > 1 or len(inner) > 1 else f"{inner}?"
    groups: dict[str, list[str]] = {}
    for word in words:
        groups.setdefault(word[0], []).append(word)
    branches = []
    for members in groups.values():
        prefix = os.path.commonprefix(members)
        branches.append(prefix + _trie([m[len(prefix):] for m in members])
                        if len(members) > 1 else members[0])
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


class _Compiler:
    """Turns a lexicon's entries into regular expressions over its spelled words."""

    def __init__(self, lexicon: Lexicon, sets: dict[str, list[str]], path: Path,
                 capture: bool = False) -> None:
        self.lexicon, self.sets, self.path, self.capture = lexicon, sets, path, capture
        self.known: set[str] = set()
        self._sets: dict[str, str] = {}
        self._entries: dict[str, str] = {}
        self._words: dict[str, str] = {}

    def fail(self, why: str, entry: str) -> LexiconError:
        return LexiconError(f"{self.path}: {why} in {entry!r}")

    def word(self, alternative: str, entry: str) -> str:
        """One word (maybe with ``*`` before or after) as a regex."""
        if alternative not in self._words:
            self._words[alternative] = self._word(alternative, entry)
        return self._words[alternative]

    def _word(self, alternative: str, entry: str) -> str:
        head, tail = alternative.startswith("*"), alternative.endswith("*")
        core = _canonical(self.lexicon, alternative.strip("*"))
        if not core or any(c in alternative for c in "()[]{}!$"):
            raise self.fail(f"bad word {alternative!r}", entry)
        pieces = core.split()
        self.known.update(p for p in pieces[1:] if p.isalpha())
        if not head and pieces[0].isalpha():
            self.known.add(pieces[0])
        return (r"\S*" if head else "") + core + (r"\S*" if tail else "")  # \w and spaces

    def choice(self, alternatives: list[str], entry: str) -> tuple[str, bool]:
        """(regex, whether ``$`` is one of the alternatives)."""
        ends = "$" in alternatives
        regexes = {self.entry(a) for a in alternatives if a != "$"}
        if not regexes:
            raise self.fail("a choice of nothing", entry)
        return _alternation(regexes), ends

    def named(self, name: str, entry: str) -> str:
        if name not in self.sets:
            raise self.fail(f"unknown set {{{name}}}", entry)
        if name not in self._sets:
            self._sets[name] = "(?!)"  # a set naming itself matches nothing more
            self._sets[name] = self.choice(self.sets[name], entry)[0]
        return self._sets[name]

    def atom(self, atom: str, entry: str) -> tuple[str, bool, bool]:
        """(regex, optional, may be the end of the message instead) for one atom."""
        if atom.startswith("[") and atom.endswith("]"):
            return (*self.choice(_split(atom[1:-1], "|"), entry)[:1], True, False)
        if atom.startswith("!"):
            inner, optional, ends = self.atom(atom[1:], entry)
            if optional or ends:
                raise self.fail("an optional negation", entry)
            return rf"(?!{inner}(?!\S))\S+", False, False
        if atom.startswith("(") and atom.endswith(")"):
            regex, ends = self.choice(_split(atom[1:-1], "|"), entry)
            return regex, False, ends
        if atom.startswith("{") and atom.endswith("}"):
            return self.named(atom[1:-1], entry), False, False
        words = {self.word(a, entry) for a in atom.split("|") if a}
        if not words:
            raise self.fail(f"empty atom {atom!r}", entry)
        return _alternation(words), False, False

    def entry(self, entry: str) -> str:
        """An entry's regex: it begins and ends with a word (not optional, not a gap),
        and every later atom brings the space before it."""
        if entry not in self._entries:
            self._entries[entry] = self._entry(entry)
        return self._entries[entry]

    def _entry(self, entry: str) -> str:
        atoms = [a for a in _split(entry, " ")  # without the words the lexicon drops ("ne")
                 if not (a.isalpha() and a in self.lexicon.drop)]
        if not atoms or _gap(atoms[-1]) or _gap(atoms[0]) or atoms[0] == "$" \
                or atoms[0].startswith("["):
            raise self.fail("an entry must begin and end with a word", entry)
        regex, _optional, ends = self.atom(atoms[0], entry)
        if ends:
            raise self.fail("an entry cannot begin with the end", entry)
        for raw in atoms[1:]:
            gap = _gap(raw, self.capture)
            if gap is not None:
                regex += gap
            elif raw == "$":  # the end of the message
                regex += "$"
            else:
                piece, optional, ends = self.atom(raw, entry)
                if optional:
                    regex += f"(?: {piece})?"
                elif ends:
                    regex += f"(?: {piece}|$)"
                else:
                    regex += f" {piece}"
        return regex

    def union(self, entries: Iterable[str]) -> re.Pattern[str] | None:
        """All entries in one expression; those with gaps first, since at one word the
        first entry that matches is the one kept."""
        entries = sorted((str(e) for e in entries),
                         key=lambda e: not any(_gap(a) for a in _split(e, " ")))
        regexes = [self.entry(e) for e in entries]
        if not regexes:
            return None
        return re.compile(r"(?<!\S)(?:" + "|".join(regexes) + r")(?!\S)")


class _TextLoader(yaml.SafeLoader):
    """YAML where every scalar is text: "on", "no", "8" are words here, not booleans or
    numbers."""


_TextLoader.yaml_implicit_resolvers = {}


def _strings(value: Any, where: str, path: Path) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LexiconError(f"{path}: {where} must be a list of strings")
    return value


def load(language: str, directory: Path | None = None) -> Lexicon:
    """Read and compile one language's lexicon."""
    path = (directory or DATA_DIR) / f"{language}.yaml"
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_TextLoader) or {}
    except (OSError, yaml.YAMLError) as error:
        raise LexiconError(f"{path}: {error}") from error
    unknown = set(data.get("categories") or {}) - set(CATEGORIES)
    if unknown:
        raise LexiconError(f"{path}: unknown categories {sorted(unknown)}")

    def words(key: str) -> list[str]:
        return [" ".join(base_tokens(w)) for w in _strings(data.get(key), key, path)]

    def mapping(key: str) -> dict[str, str]:
        return {" ".join(base_tokens(k)): " ".join(base_tokens(v))
                for k, v in (data.get(key) or {}).items()}

    bare = Lexicon(language=language, spelling={}, drop=frozenset(words("drop")),
                   clitics=frozenset(words("clitics")), expand=mapping("expand"),
                   split_prefixes=mapping("split_prefixes"),
                   split_known=str(data.get("split_known", "")).lower() in ("true", "yes"),
                   keep=frozenset())
    spelling = {}
    for key, value in (data.get("spelling") or {}).items():
        glued = _canonical_glue(bare, str(key))
        if glued:
            spelling[glued] = tuple(_canonical_glue(bare, str(value)).split())
    bare = dataclasses.replace(bare, spelling=spelling)
    sets = {str(k): [str(v) for v in _strings(vals, f"set {k}", path)]
            for k, vals in (data.get("sets") or {}).items()}
    compiler = _Compiler(bare, sets, path)
    patterns = []
    for category in CATEGORIES:
        entries = _strings((data.get("categories") or {}).get(category), category, path)
        compiled = compiler.union(entries)
        if compiled is not None:
            patterns.append((category, compiled))
    idioms = _Compiler(bare, sets, path, capture=True)
    exclusions = idioms.union(_strings(data.get("exclusions"), "exclusions", path))
    keep = frozenset(_canonical(bare, w) for w in _strings(data.get("keep"), "keep", path))
    typos = _strings(data.get("typos"), "typos", path)
    if any(not w.replace(" ", "").isalpha() for w in typos):
        raise LexiconError(f"{path}: typos are whole words")
    return dataclasses.replace(
        bare, patterns=tuple(patterns), exclusions=exclusions, keep=keep,
        vocabulary=tuple(sorted({_canonical(bare, w) for w in typos})),
        known=frozenset(compiler.known | idioms.known))


def _canonical_glue(lexicon: Lexicon, text: str) -> str:
    """A spelling key or value as it will look once clitics are glued ("c'est" →
    "cest", "j'ai" → "je ai")."""
    words = _glue([Word(t, 0, 0) for t in base_tokens(text)], lexicon.clitics,
                  lexicon.expand)
    return " ".join(w.text for w in words)


@cache
def lexicons() -> tuple[Lexicon, ...]:
    """Every language's lexicon, read at first use."""
    return tuple(load(language) for language in LANGUAGES)


# -- matching -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """Danger words found by one lexicon: ``start``..``end`` index the message's words."""

    category: str
    language: str
    words: str
    start: int
    end: int


@dataclass(frozen=True)
class Found:
    categories: tuple[str, ...]  # all found, in ``CATEGORIES`` order
    language: str  # the lexicon that found most
    words: str  # what matched (spelled as above), for tests and logs; never shown
    hits: tuple[Hit, ...] = ()

    @property
    def category(self) -> str:
        """The first category (the ticket's topic)."""
        return self.categories[0]


def _offsets(words: list[Word]) -> tuple[str, list[int]]:
    text = " ".join(w.text for w in words)
    starts, position = [], 0
    for word in words:
        starts.append(position)
        position += len(word.text) + 1
    return text, starts


def _matches(pattern: re.Pattern[str], text: str,
             starts: list[int]) -> Iterable[re.Match[str]]:
    """A match of ``pattern`` beginning at each word, where there is one (matches may
    overlap: an exclusion inside another one is found too)."""
    for start in starts:
        found = pattern.match(text, start)
        if found is not None:
            yield found


def _hits(lexicon: Lexicon, words: list[Word]) -> list[Hit]:
    text, starts = _offsets(words)
    hits = []
    for category, pattern in lexicon.patterns:
        for found in _matches(pattern, text, starts):
            first = bisect.bisect_right(starts, found.start()) - 1
            last = bisect.bisect_right(starts, max(found.end() - 1, found.start())) - 1
            hits.append(Hit(category, lexicon.language, found.group(0),
                            words[first].first, words[last].last))
    return hits


def _excluded(lexicon: Lexicon, words: list[Word]) -> set[int]:
    """The message words an exclusion covers: those it matched outside its gaps."""
    if lexicon.exclusions is None:
        return set()
    text, starts = _offsets(words)
    covered: set[int] = set()
    for found in _matches(lexicon.exclusions, text, starts):
        gaps = [found.span(g) for g in range(1, (found.re.groups or 0) + 1)
                if found.start(g) >= 0 and found.end(g) > found.start(g)]
        for index, start in enumerate(starts):
            inside = found.start() <= start < found.end()
            if inside and not any(a <= start < b for a, b in gaps):
                covered.update(range(words[index].first, words[index].last + 1))
    return covered


def detect(text: str, lexicon_set: Sequence[Lexicon] | None = None) -> tuple[Hit, ...]:
    """Every danger hit in ``text`` that no exclusion covers, in category then language
    order."""
    if not text or not text.strip():
        return ()
    tokens = base_tokens(text)
    if not tokens:
        return ()
    hits: list[Hit] = []
    excluded: set[int] = set()
    for lexicon in lexicon_set if lexicon_set is not None else lexicons():
        words = lexicon.words(tokens)
        excluded |= _excluded(lexicon, words)
        hits.extend(_hits(lexicon, words))
    kept = [h for h in hits if excluded.isdisjoint(range(h.start, h.end + 1))]
    order = {c: i for i, c in enumerate(CATEGORIES)}
    languages = {code: i for i, code in enumerate(LANGUAGES)}
    kept.sort(key=lambda h: (order[h.category], languages.get(h.language, 99), h.start))
    return tuple(kept)


def found_in(hits: Sequence[Hit]) -> Found | None:
    """The hits of ``detect`` as one finding (None for none)."""
    if not hits:
        return None
    categories = tuple(dict.fromkeys(h.category for h in hits))
    counts: dict[str, int] = {}
    for hit in hits:
        counts[hit.language] = counts.get(hit.language, 0) + 1
    language = max(counts, key=lambda code: (counts[code], -LANGUAGES.index(code)
                                              if code in LANGUAGES else -99))
    words = " | ".join(dict.fromkeys(h.words for h in hits))
    return Found(categories, language, words, tuple(hits))


def match(text: str) -> Found | None:
    """What danger ``text`` speaks of, or None."""
    return found_in(detect(text))


def numbers_for(categories: Iterable[str]) -> tuple[str, ...]:
    """The numbers to give for these categories, in ``NUMBER_ORDER`` (all of them when
    there is no category)."""
    wanted = {n for c in categories for n in NUMBERS.get(c, ())}
    return tuple(n for n in NUMBER_ORDER if n in wanted) or NUMBER_ORDER
