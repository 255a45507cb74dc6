"""The resource catalogue: official help pages for common procedures.

The catalogue is a YAML file (``bot/data/resources.yaml`` ships with Relais). It is
validated as a whole, with the line number of every problem, before anything is stored;
entries are then merged into the ``resources`` table by id. A fresh install loads the
shipped catalogue on first use (``ensure_loaded``), safely from several processes.

Search is fuzzy (rapidfuzz) and forgiving: accents, typos and everyday words
("pole emploi", "secu", "apl") find the right page.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from rapidfuzz import fuzz
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import sms
from bot.core.i18n import N_
from bot.storage.models import Resource

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "resources.yaml"

# Theme ids, in the order people see them, with their labels (translated when shown).
THEMES: tuple[tuple[str, str], ...] = (
    ("emploi", N_("Work")),
    ("sante", N_("Health")),
    ("papiers", N_("ID and papers")),
    ("argent", N_("Money and benefits")),
    ("impots", N_("Taxes")),
    ("numerique", N_("Digital skills")),
)
THEME_IDS = tuple(theme for theme, _label in THEMES)
LEVELS = (1, 2, 3)  # 1 not at ease with digital tools, 2 a little, 3 at ease
LANGUAGES = ("fr", "en")  # each entry has a title and a text in these languages

# Official sites a resource may link to (the host or one of its subdomains). A catalogue
# may add hosts of its own with a top-level ``domains:`` list.
ALLOWED_DOMAINS: tuple[str, ...] = (
    "gouv.fr",
    "service-public.fr",
    "caf.fr",
    "ameli.fr",
    "francetravail.fr",
    "info-retraite.fr",
    "laposte.fr",
    "lesbonsclics.fr",
    "pix.fr",
    "cnsa.fr",
    "msa.fr",
    "urssaf.fr",
    "lassuranceretraite.fr",
)

MAX_SEGMENTS = 2
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
ENTRY_FIELDS = {"id", "theme", "level", "url", "keywords", "synonyms"}
TEXT_FIELDS = {"title", "text"}
LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}$")


# -- the catalogue file ------------------------------------------------------------------


@dataclass(frozen=True)
class Issue:
    """One problem in a catalogue file, with its line (1-based; 0 when unknown)."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class Entry:
    id: str
    theme: str
    level: int
    url: str
    keywords: list[str]
    texts: dict[str, dict[str, str]]
    line: int = 0

    def values(self) -> dict[str, Any]:
        return {"theme": self.theme, "level": self.level, "url": self.url,
                "texts": self.texts, "keywords": self.keywords}


@dataclass
class Catalogue:
    entries: list[Entry] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues


def message(title: str, text: str, url: str) -> str:
    """What a person receives for one resource: title, text and link, one per line."""
    return f"{title}\n{text}\n{url}"


def host_allowed(url: str, extra: tuple[str, ...] = ()) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == d or host.endswith("." + d) for d in (*ALLOWED_DOMAINS, *extra))


def url_problem(url: object, extra: tuple[str, ...] = ()) -> str | None:
    """Why a resource URL is refused, or None."""
    if not isinstance(url, str) or not url.strip():
        return "url is empty"
    if len(url) > 500 or any(c.isspace() for c in url):
        return f"url {url!r} is not a valid address"
    parts = urlsplit(url)
    if parts.scheme != "https":
        return f"url {url!r} must start with https://"
    if not parts.hostname or "." not in parts.hostname:
        return f"url {url!r} has no valid host"
    if not host_allowed(url, extra):
        return (f"url {url!r}: {parts.hostname} is not an official site on the allow-list "
                "(add it under 'domains:' if you trust it)")
    return None


def load_file(path: Path) -> Catalogue:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return Catalogue(issues=[Issue(0, f"cannot read {path}: {exc.strerror or exc}")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return Catalogue(issues=[Issue(line, "the file is not UTF-8 text")])
    return parse(text)


def parse(text: str) -> Catalogue:
    """Read and validate a whole catalogue; every problem is listed with its line."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = exc.problem or exc.context or "syntax error"
        return Catalogue(issues=[Issue(line, f"YAML syntax error: {problem}")])
    except yaml.YAMLError as exc:
        return Catalogue(issues=[Issue(0, f"YAML error: {exc}")])
    finally:
        loader.dispose()
    catalogue = Catalogue()
    entries_node, entries, domains = _top_level(root, data, catalogue.issues)
    if entries_node is None:
        return catalogue
    seen: dict[str, int] = {}
    for node, value in zip(entries_node.value, entries, strict=True):
        entry = _entry(node, value, domains, catalogue.issues)
        if entry is None:
            continue
        if entry.id in seen:
            catalogue.issues.append(
                Issue(entry.line, f"id {entry.id!r} is already used on line {seen[entry.id]}")
            )
            continue
        seen[entry.id] = entry.line
        catalogue.entries.append(entry)
    if not catalogue.entries and not catalogue.issues:
        catalogue.issues.append(Issue(_line(entries_node), "the catalogue has no resources"))
    catalogue.issues.sort(key=lambda issue: issue.line)
    return catalogue


def _line(node: yaml.Node | None) -> int:
    return node.start_mark.line + 1 if node is not None else 0


def _top_level(
    root: yaml.Node | None, data: Any, issues: list[Issue]
) -> tuple[yaml.SequenceNode | None, list[Any], tuple[str, ...]]:
    """The list of entries (a top-level list, or ``resources:``) and extra domains."""
    if isinstance(root, yaml.SequenceNode):
        return root, list(data), ()
    if not isinstance(root, yaml.MappingNode):
        issues.append(Issue(_line(root), "expected a 'resources:' list of entries"))
        return None, [], ()
    keys = _keys(root, issues)
    for key in keys:
        if key not in ("resources", "domains", "version"):
            issues.append(Issue(_line(keys[key][0]), f"unknown top-level field {key!r}"))
    domains: tuple[str, ...] = ()
    if "domains" in keys:
        raw = data.get("domains")
        if not isinstance(raw, list) or not all(
            isinstance(d, str) and re.fullmatch(r"[a-z0-9.-]+\.[a-z]{2,}", d) for d in raw
        ):
            issues.append(Issue(_line(keys["domains"][1]),
                                "domains must be a list of host names like 'example.fr'"))
        else:
            domains = tuple(d.lower() for d in raw)
    if "resources" not in keys:
        issues.append(Issue(_line(root), "missing the 'resources:' list"))
        return None, [], domains
    node = keys["resources"][1]
    if not isinstance(node, yaml.SequenceNode):
        issues.append(Issue(_line(node), "'resources' must be a list of entries"))
        return None, [], domains
    return node, list(data["resources"]), domains


def _keys(node: yaml.MappingNode, issues: list[Issue]) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """Key name -> (key node, value node); a repeated key is reported."""
    found: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        if key in found:
            issues.append(Issue(_line(key_node), f"field {key!r} is given twice"))
        found[key] = (key_node, value_node)
    return found


def _entry(
    node: yaml.Node, value: Any, domains: tuple[str, ...], issues: list[Issue]
) -> Entry | None:
    line = _line(node)
    if not isinstance(node, yaml.MappingNode) or not isinstance(value, dict):
        issues.append(Issue(line, "each resource must be a mapping with id, theme, level…"))
        return None
    before = len(issues)
    keys = _keys(node, issues)
    ident = value.get("id")
    name = f"resource {ident!r}" if isinstance(ident, str) and ident else "resource"

    def problem(key: str | None, text: str) -> None:
        at = _line(keys[key][1]) if key in keys else line
        issues.append(Issue(at, f"{name}: {text}"))

    for key in keys:
        if key not in ENTRY_FIELDS and not LANGUAGE_CODE.match(key):
            problem(key, f"unknown field {key!r}")
    for key in ("id", "theme", "level", "url", "keywords", *LANGUAGES):
        if key not in keys or value.get(key) in (None, ""):
            problem(None, f"missing field {key!r}")
    if "id" in keys and ident not in (None, ""):
        if not isinstance(ident, str) or not ID_PATTERN.match(ident):
            problem("id", f"id {ident!r} must be lower-case letters, digits and dashes")
    theme = value.get("theme")
    if "theme" in keys and theme not in (None, "") and theme not in THEME_IDS:
        problem("theme", f"unknown theme {theme!r} (one of: {', '.join(THEME_IDS)})")
    level = value.get("level")
    if "level" in keys and level not in (None, ""):
        if isinstance(level, bool) or level not in LEVELS:
            problem("level", f"unknown level {level!r} (1 not at ease, 2 a little, 3 at ease)")
    url = value.get("url")
    if "url" in keys and url not in (None, ""):
        reason = url_problem(url, domains)
        if reason:
            problem("url", reason)
    keywords: list[str] = []
    for key in ("keywords", "synonyms"):
        words = value.get(key)
        if key not in keys or words in (None, ""):
            continue
        if not isinstance(words, list) or not words or not all(
            isinstance(w, str) and w.strip() for w in words
        ):
            problem(key, f"{key} must be a list of words")
            continue
        keywords.extend(w.strip() for w in words if w.strip() not in keywords)
    texts: dict[str, dict[str, str]] = {}
    for key in keys:
        if not LANGUAGE_CODE.match(key) or key in ENTRY_FIELDS:
            continue
        block = value.get(key)
        if block in (None, ""):
            continue
        if not isinstance(block, dict):
            problem(key, f"{key} must have a title and a text")
            continue
        for extra in sorted(set(block) - TEXT_FIELDS):
            problem(key, f"{key}: unknown field {extra!r}")
        for part in ("title", "text"):
            if not isinstance(block.get(part), str) or not block[part].strip():
                problem(key, f"{key}: missing {part}")
        if all(isinstance(block.get(p), str) for p in TEXT_FIELDS):
            texts[key] = {"title": " ".join(block["title"].split()),
                          "text": " ".join(block["text"].split())}
    if "fr" in texts and isinstance(url, str):
        rendered = sms.normalise(message(texts["fr"]["title"], texts["fr"]["text"], url))
        count = sms.segments(rendered)
        if count > MAX_SEGMENTS:
            problem("fr", f"the French title, text and link need {count} SMS segments "
                          f"({sms.length(rendered)} characters); at most {MAX_SEGMENTS}")
    if len(issues) > before:
        return None
    return Entry(id=ident, theme=theme, level=level, url=url, keywords=keywords,
                 texts=texts, line=line)


# -- storing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MergeSummary:
    added: int
    updated: int
    unchanged: int

    def __str__(self) -> str:
        return f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged"


def insert_ignoring_conflicts(session: AsyncSession, table: Any) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` on the session's database (several processes)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


async def merge(session: AsyncSession, entries: list[Entry], now: datetime) -> MergeSummary:
    """Add new entries and update changed ones, by id. Nothing is deleted."""
    existing = {
        row.id: row for row in (await session.scalars(select(Resource))).all()
    }
    added = updated = unchanged = 0
    new_rows: list[dict[str, Any]] = []
    for entry in entries:
        row = existing.get(entry.id)
        values = entry.values()
        if row is None:
            new_rows.append({"id": entry.id, **values, "updated_at": now})
            added += 1
        elif any(getattr(row, key) != val for key, val in values.items()):
            await session.execute(
                update(Resource).where(Resource.id == entry.id)
                .values(**values, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            updated += 1
        else:
            unchanged += 1
    if new_rows:
        await session.execute(insert_ignoring_conflicts(session, Resource), new_rows)
    await session.flush()
    return MergeSummary(added, updated, unchanged)


async def ensure_loaded(session: AsyncSession, now: datetime) -> int:
    """Load the shipped catalogue when the table is empty (first use). Safe to run from
    several processes at once: rows are inserted with ``ON CONFLICT DO NOTHING``.
    Returns how many entries were added."""
    if await session.scalar(select(Resource.id).limit(1)) is not None:
        return 0
    catalogue = load_file(SHIPPED)
    if not catalogue.ok:  # a broken shipped file is a bug: say so loudly
        problems = "; ".join(map(str, catalogue.issues))
        raise RuntimeError(f"shipped catalogue is invalid: {problems}")
    rows = [{"id": e.id, **e.values(), "updated_at": now} for e in catalogue.entries]
    await session.execute(insert_ignoring_conflicts(session, Resource), rows)
    await session.flush()
    return len(rows)


def text_for(resource: Resource, language: str | None) -> dict[str, str]:
    """The title and text in the person's language, else French, else any."""
    texts = resource.texts or {}
    for code in (language, "fr", "en"):
        if code and code in texts:
            return texts[code]
    return next(iter(texts.values()), {"title": resource.id, "text": ""})


def resource_message(resource: Resource, language: str | None) -> str:
    text = text_for(resource, language)
    return message(text["title"], text["text"], resource.url)


# -- search --------------------------------------------------------------------------------

# Words that say nothing about the procedure (folded, French and English).
STOP_WORDS = frozenset(
    "a au aux avec c ce comment d de des du en et faire il j je l la le les m ma me mes mon n "
    "ne on ou par pas pour qu que quoi s sa se ses son sur svp t ta te tes ton un une veux y "
    "voudrais aimerais besoin bonjour merci aider aidez moi demander obtenir avoir "
    "i me my the how to do for of want need get please hello with can an is in on".split()
)
SCORE_MIN = 72  # below this a resource is not a match
SCORE_SPREAD = 10  # results more than this below the best one are left out
MAX_QUERY = 120


def fold(text: str) -> str:
    """Lower case, no accents, letters and digits only, single spaces."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", bare).split())


def _meaningful(text: str) -> str:
    words = [w for w in fold(text).split() if w not in STOP_WORDS]
    return " ".join(words)


def _word_cover(words: list[str], others: list[str]) -> float:
    """How well each of ``words`` is found among ``others`` (fuzzy), on average."""
    return sum(max(fuzz.ratio(w, o) for o in others) for w in words) / len(words)


def term_score(query: str, term: str) -> float:
    """How well a (folded, meaningful) query matches one (folded) search term, 0..100.

    A term found whole in the query scores high ("refaire carte grise" finds "carte
    grise"), the more so when it explains all of the query; small typos cost little.
    """
    if not query or not term:
        return 0.0
    if query == term:
        return 100.0
    q_words, t_words = query.split(), term.split()
    if len(query) <= 3:  # "apl", "caf", "rsa": exact words only, typos are too risky
        return 95.0 if query in t_words else 0.0
    term_found = _word_cover(t_words, q_words)
    query_explained = _word_cover(q_words, t_words)
    scores = [fuzz.ratio(query, term), 0.95 * (0.7 * term_found + 0.3 * query_explained)]
    if term_found == 100:  # every word of the term is in the query
        scores.append(95.0 - 10.0 * (1 - query_explained / 100))
    if len(query) >= 5 and len(term) >= 4:
        scores.append(fuzz.partial_ratio(query, term) * 0.9)
    return max(scores)


@dataclass(frozen=True)
class Hit:
    resource: Resource
    score: float


def search_terms(resource: Resource) -> list[str]:
    terms = [resource.id.replace("-", " "), *resource.keywords]
    terms += [text["title"] for text in (resource.texts or {}).values() if "title" in text]
    folded = {_meaningful(term) for term in terms}
    return [term for term in folded if term]


def search(
    resources: list[Resource], query: str, level: int | None = None, limit: int = 3
) -> list[Hit]:
    """The best matches for what a person typed, best first; ties go to their level."""
    wanted = _meaningful(query[:MAX_QUERY])
    if not wanted:
        return []
    hits = []
    for resource in resources:
        score = max((term_score(wanted, term) for term in search_terms(resource)), default=0)
        if score >= SCORE_MIN:
            hits.append(Hit(resource, score))
    if not hits:
        return []

    def rank(hit: Hit) -> tuple[int, int, str]:
        distance = abs((hit.resource.level or 2) - level) if level else 0
        return (-round(hit.score), distance, hit.resource.id)

    hits.sort(key=rank)
    best = hits[0].score
    return [hit for hit in hits if hit.score >= best - SCORE_SPREAD][:limit]


async def all_resources(session: AsyncSession) -> list[Resource]:
    return list((await session.scalars(select(Resource).order_by(Resource.id))).all())


async def find(
    session: AsyncSession, query: str, level: int | None = None, limit: int = 3
) -> list[Hit]:
    return search(await all_resources(session), query, level, limit)


def theme_label(theme: str) -> str:
    return dict(THEMES).get(theme, theme)


def for_theme(resources: list[Resource], theme: str, level: int | None) -> list[Resource]:
    """A theme's resources: those that suit the person's level first, then by title."""
    chosen = [r for r in resources if r.theme == theme]

    def rank(resource: Resource) -> tuple[int, str]:
        distance = abs((resource.level or 2) - level) if level else 0
        return (distance, fold(text_for(resource, "fr")["title"]))

    return sorted(chosen, key=rank)
