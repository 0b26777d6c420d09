"""Prompt families: what the teacher is asked, for which entity, built from the training view only.

A family turns a ``TrainView`` (training sequences, training reviews, the item text table; docs/protocol.md: nothing
of validation or test) into ``PromptItem``s: one chat (a list of ``{"role", "content"}`` messages rendered from
Jinja2 templates that live in config, ``conf/prompts/*.yaml``) per entity, and parses the teacher's answer.
Backends apply the model's chat template to the messages when it has one.

*RDRec* (``RDRecFamily``) asks, per training interaction, for two short numbered sentences, "1. The user
prefers …" and "2. The item's attributes are …" (Wang et al., 2024):

- ``review`` variant — the interaction's review text is the evidence, as in the paper;
- ``metadata`` variant, for data sets without reviews (ml-100k) — the evidence is the item's metadata (title,
  genres/categories, brand, year) and the items the user consumed *before* it in the training sequence (at
  most ``history_len``, most recent last). The answer has the same two-sentence form, so the student tasks
  are unchanged; what changes is that the preference sentence summarises the history rather than a review.
- ``auto`` picks ``review`` when the training view has reviews, else ``metadata``.

``levels`` chooses what is asked: ``interaction`` (above), ``item`` — one sentence "1. The item's attributes
are …" per item, from the item's metadata only (template ``item``) — and ``user`` — one sentence "1. The user
prefers …" per user, from the user's latest training items only (template ``user``). These two cover every item
and every user at a cost of one prompt each (ml-100k: 1,682 + 943 prompts instead of ~99k interactions). The
export also aggregates the per-interaction sentences per user and per item (``rdrec.teacher.export``); nothing
here can reach a held-out interaction.

*SLIM* (``SlimFamily``) asks, per user, for three-step reasoning over the training history, macro to micro:
(1) the user's preferences, (2) categories/genres/brands to recommend, (3) specific items (Wang et al., 2024).
Each item also carries the *simplified* prompt the student sees (``student_prompt``): the same history without
the instructions, which SLIM's student is fine-tuned to answer with the teacher's rationale.

A template may set ``prefill``: the opening words of the answer (e.g. "1. The user prefers"), sent as the start
of the assistant's turn so the model continues the format instead of choosing one (``rdrec.teacher.backends``);
the answer parsed and stored is the whole text, opening included. ``stop(kind)`` says when an answer is
complete (after the last numbered part), so backends stop decoding there.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from typing import Any

import jinja2
import numpy as np

from rdrec.data.prepared import TrainView
from rdrec.teacher.backends.base import GenerationParams, Stop, looping

#: bump when rendering or parsing changes in a way the template text does not show (it enters the hash)
#: 2: answers stop once complete (``stop``), an answer that is only the prefilled opening is unparsable
FAMILY_VERSION = 2

_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


class ParseError(ValueError):
    """The teacher's answer does not have the family's format."""


@dataclass(frozen=True)
class PromptItem:
    family: str  # "rdrec" | "slim"
    kind: str  # "interaction" | "user" | "item"
    entity: dict[str, int]  # {"user": 3, "item": 17} (or one of them) in the prepared dataset's ids
    messages: tuple[tuple[str, str], ...]  # ((role, content), …); a last ("assistant", opening) is a prefill
    template_hash: str
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def chat(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]

    @property
    def question(self) -> str:
        """The last user turn (what this prompt asks about the entity)."""
        return next(c for r, c in reversed(self.messages) if r == "user")

    @property
    def length(self) -> int:
        return sum(len(c) for _, c in self.messages)


@dataclass(frozen=True)
class Subset:
    """Which entities to generate for: the first ``users`` user ids (ids are a seeded random permutation, so
    this is a random sample), per user the latest ``interactions_per_user`` training interactions, and (for
    item-level prompts) the first ``items`` item ids."""

    users: int | None = None
    interactions_per_user: int | None = None
    items: int | None = None

    def pick_items(self, view: TrainView) -> list[int]:
        items = sorted(int(i) for i in view.items["item"].tolist())
        return items if self.items is None else items[: self.items]

    def pick_users(self, view: TrainView) -> list[int]:
        users = [u for u in range(1, view.num_users + 1) if len(view.sequences[u])]
        return users if self.users is None else users[: self.users]


class PromptFamily:
    name = "family"

    def __init__(self, templates: dict, history_len: int = 20, item_noun: str = "item", min_words: int = 3,
                 max_words: int = 80, max_line_words: int | None = None, max_word_repeats: int | None = None,
                 generation: dict | None = None):
        self.templates = {
            k: {"system": v.get("system") or "", "user": v["user"],
                "examples": [{"user": e["user"], "assistant": e["assistant"]} for e in (v.get("examples") or [])],
                **({"prefill": str(v["prefill"])} if v.get("prefill") else {})}
            for k, v in dict(templates).items()
        }
        self._compiled = {
            k: {"system": _JINJA.from_string(v["system"]), "user": _JINJA.from_string(v["user"]),
                "examples": [(_JINJA.from_string(e["user"]), _JINJA.from_string(e["assistant"])) for e in v["examples"]]}
            for k, v in self.templates.items()
        }
        self.history_len, self.item_noun = history_len, item_noun
        self.min_words, self.max_words = min_words, max_words
        self.max_line_words = max_line_words  # generation stops a line longer than this (a looping list)
        self.max_word_repeats = max_word_repeats  # a part naming one word this often is a loop: stopped, rejected
        # this family's overrides of the run's generation parameters (e.g. {do_sample: true}); part of its keys
        self.generation = {str(k): v for k, v in dict(generation or {}).items()}
        unknown = set(self.generation) - {f.name for f in fields(GenerationParams)}
        if unknown:
            raise ValueError(f"{self.name} prompts: generation: unknown parameter(s) {sorted(unknown)}; "
                             f"expected some of {[f.name for f in fields(GenerationParams)]}")

    # ---- what subclasses provide -------------------------------------------------------------------------
    def build(self, view: TrainView, subset: Subset) -> list[PromptItem]:
        raise NotImplementedError

    def parse(self, text: str, kind: str | None = None) -> dict[str, str]:
        raise NotImplementedError

    def stop(self, kind: str):
        """When an answer of this kind is complete (``rdrec.teacher.backends.base.Stop``), or None."""
        return None

    # ---- shared ------------------------------------------------------------------------------------------
    def template_hash(self, variant: str) -> str:
        """Everything that decides the prompt text and its parsing, hashed; part of every store key."""
        spec = {"family": self.name, "variant": variant, "version": FAMILY_VERSION, "templates": self.templates[variant],
                "history_len": self.history_len, "item_noun": self.item_noun, "min_words": self.min_words,
                "max_words": self.max_words, "max_line_words": self.max_line_words}
        if self.max_word_repeats is not None:  # only when set: the keys of families without it stay as they were
            spec["max_word_repeats"] = self.max_word_repeats
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def render(self, variant: str, **context) -> tuple[tuple[str, str], ...]:
        """system, then each few-shot example as a user/assistant pair, then the user turn, then the opening of
        the answer (an assistant turn to continue) if the template has a ``prefill``."""
        compiled = self._compiled[variant]
        messages = []
        system = compiled["system"].render(item_noun=self.item_noun).strip()
        if system:
            messages.append(("system", system))
        for user, assistant in compiled["examples"]:
            messages += [("user", user.render(item_noun=self.item_noun).strip()),
                         ("assistant", assistant.render(item_noun=self.item_noun).strip())]
        messages.append(("user", compiled["user"].render(item_noun=self.item_noun, **context).strip()))
        prefill = self.templates[variant].get("prefill")
        if prefill:
            messages.append(("assistant", prefill.strip()))
        return tuple(messages)

    def _check_part(self, name: str, text: str) -> str:
        text = _clean(text)
        words = len(text.split())
        if words < self.min_words:
            raise ParseError(f"{name}: {words} word(s), expected at least {self.min_words}")
        if words > self.max_words:
            raise ParseError(f"{name}: {words} words, expected at most {self.max_words}")
        if not re.search(r"[A-Za-z]{2}", text) or "{{" in text or "…" == text.strip(". "):
            raise ParseError(f"{name}: not a sentence: {text[:40]!r}")
        if text.rstrip(" .:;,-").lower() in self._openings:
            raise ParseError(f"{name}: only the opening words, nothing after them: {text[:40]!r}")
        if self.max_word_repeats is not None and looping(text, self.max_word_repeats):
            raise ParseError(f"{name}: a looping list (a word {self.max_word_repeats} times or more): {text[:60]!r}")
        return text

    @property
    def _openings(self) -> set[str]:
        """The sentence starts a template's prefill gives away ("the user prefers"): an answer that is no more
        than one of them says nothing."""
        out = set()
        for v in self.templates.values():
            for line in (v.get("prefill") or "").splitlines():
                line = re.sub(r"^\s*(?:step\s*)?\(?\d+\s*[.):]\s*", "", _clean(line), flags=re.I)
                if line:
                    out.add(line.rstrip(" .:;,-").lower())
        return out


class RDRecFamily(PromptFamily):
    name = "rdrec"

    LEVELS = ("interaction", "item", "user")

    def __init__(self, templates: dict, variant: str = "auto", levels=("interaction",), user_history_len: int = 10,
                 **kwargs):
        super().__init__(templates, **kwargs)
        self.user_history_len = int(user_history_len)  # user level: latest training items shown
        if variant not in ("auto", "review", "metadata"):
            raise ValueError(f"rdrec prompt variant: expected auto, review or metadata, got {variant!r}")
        self.variant = variant
        self.levels = tuple(levels)
        bad = [lv for lv in self.levels if lv not in self.LEVELS]
        if bad or not self.levels:
            raise ValueError(f"rdrec levels: expected some of {self.LEVELS}, got {list(levels)}")
        missing = [lv for lv in ("item", "user") if lv in self.levels and lv not in self.templates]
        if missing:
            raise ValueError(f"rdrec levels {missing} need templates of the same name (conf/prompts/rdrec.yaml)")

    def stop(self, kind: str):
        return Stop(2 if kind == "interaction" else 1, self.max_line_words, self.max_word_repeats)

    def template_hash(self, variant: str) -> str:
        if variant != "user":
            return super().template_hash(variant)
        spec = {"base": super().template_hash(variant), "user_history_len": self.user_history_len}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def resolve_variant(self, view: TrainView) -> str:
        if self.variant != "auto":
            return self.variant
        return "review" if len(view.reviews) else "metadata"

    def build(self, view: TrainView, subset: Subset) -> list[PromptItem]:
        items = _item_table(view)
        out = []
        if "item" in self.levels:  # the item's own metadata, nothing about any user
            thash = self.template_hash("item")
            for item in subset.pick_items(view):
                out.append(PromptItem(self.name, "item", {"item": int(item)}, self.render("item", item=items[item]), thash))
        if "user" in self.levels:  # the user's latest training items
            thash = self.template_hash("user")
            for user in subset.pick_users(view):
                seq = view.sequences[user]
                shown = [int(i) for i in seq[-self.user_history_len:]]
                out.append(PromptItem(self.name, "user", {"user": int(user)},
                                      self.render("user", history=[items[i] for i in shown]), thash,
                                      {"history_items": shown}))
        if "interaction" in self.levels:
            out += self._interactions(view, subset, items)
        return out

    def _interactions(self, view: TrainView, subset: Subset, items: dict) -> list[PromptItem]:
        variant = self.resolve_variant(view)
        thash = self.template_hash(variant)
        out = []
        if variant == "review":
            reviews = view.reviews
            by_user = {u: g for u, g in reviews.groupby("user", sort=True)}
            for user in subset.pick_users(view):
                rows = by_user.get(user)
                if rows is None:
                    continue
                rows = rows.sort_values("timestamp", kind="stable")
                if subset.interactions_per_user is not None:
                    rows = rows.iloc[-subset.interactions_per_user:] if subset.interactions_per_user else rows.iloc[:0]
                for row in rows.itertuples(index=False):
                    item = items[int(row.item)]
                    messages = self.render(variant, review=str(row.review), item=item, rating=row.rating)
                    out.append(PromptItem(self.name, "interaction", {"user": int(user), "item": int(row.item)},
                                          messages, thash, {"timestamp": float(row.timestamp)}))
            return out
        for user in subset.pick_users(view):
            seq = view.sequences[user]
            positions = range(len(seq))
            if subset.interactions_per_user is not None:
                positions = positions[max(len(seq) - subset.interactions_per_user, 0):]
            for pos in positions:
                history = [items[int(i)] for i in seq[max(pos - self.history_len, 0):pos]]
                item = items[int(seq[pos])]
                messages = self.render(variant, history=history, item=item)
                out.append(PromptItem(self.name, "interaction", {"user": int(user), "item": int(seq[pos])},
                                      messages, thash, {"position": int(pos)}))
        return out

    def parse(self, text: str, kind: str | None = None) -> dict[str, str]:
        if kind in ("item", "user"):
            name, field = ("item attribute", "item_attribute") if kind == "item" else ("user preference", "user_preference")
            parts = _numbered(text, 1)
            sentence = _first_line(parts[0]) if parts is not None else _first_line(_clean(text))
            return {field: self._check_part(name, sentence)}
        parts = _numbered(text, 2)
        if parts is None:  # no numbering: accept the two sentences when they say what they are
            sentences = [s for s in re.split(r"(?<=[.!?])\s+", _clean(text)) if s]
            pref = next((s for s in sentences if re.search(r"\buser\b.*\b(prefer|like|enjoy|love|interest)", s, re.I)), None)
            attr = next((s for s in sentences if re.search(r"\battribute|\bfeature", s, re.I)), None)
            if not pref or not attr or pref == attr:
                raise ParseError("no '1.' and '2.' sentences and no recognisable preference/attribute sentences")
            parts = [pref, attr]
        pref, attr = (_first_line(p) for p in parts)
        pref = self._check_part("user preference", pref)
        attr = self._check_part("item attribute", attr)
        if pref.lower() == attr.lower():
            raise ParseError("the two sentences are identical")
        return {"user_preference": pref, "item_attribute": attr}


class SlimFamily(PromptFamily):
    name = "slim"

    def __init__(self, templates: dict, **kwargs):
        super().__init__(templates, **kwargs)
        if set(self.templates) != {"teacher", "student"}:
            raise ValueError(f"slim templates: expected 'teacher' and 'student', got {sorted(self.templates)}")

    def template_hash(self, variant: str = "teacher") -> str:
        # the student prompt is stored with each entry, so it is part of what the key stands for
        spec = {"teacher": super().template_hash("teacher"), "student": self.templates["student"]}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def build(self, view: TrainView, subset: Subset) -> list[PromptItem]:
        thash = self.template_hash()
        items = _item_table(view)
        out = []
        for user in subset.pick_users(view):
            seq = view.sequences[user]
            history = [items[int(i)] for i in seq[-self.history_len:]]
            messages = self.render("teacher", history=history)
            student = self.render("student", history=history)[-1][1]
            out.append(PromptItem(self.name, "user", {"user": int(user)}, messages, thash,
                                  {"student_prompt": student, "history_items": [int(i) for i in seq[-self.history_len:]]}))
        return out

    def stop(self, kind: str):
        return Stop(3, self.max_line_words, self.max_word_repeats)

    def parse(self, text: str, kind: str | None = None) -> dict[str, str]:
        parts = _numbered(text, 3, step_words=True)
        if parts is None:
            raise ParseError("expected three numbered steps (1. preferences, 2. categories, 3. items)")
        names = ("preferences", "categories", "items")
        out = {n: self._check_part(f"step {i + 1} ({n})", p) for i, (n, p) in enumerate(zip(names, parts))}
        if len({v.lower() for v in out.values()}) < 3:
            raise ParseError("two steps are identical")
        out["rationale"] = "\n".join(f"{i + 1}. {out[n]}" for i, n in enumerate(names))
        return out


# ---- helpers ---------------------------------------------------------------------------------------------------
def _item_table(view: TrainView) -> dict[int, dict[str, Any]]:
    """item id → the text fields a template may use (title, categories, genres, brand, year, description)."""
    out = {}
    for row in view.items.itertuples(index=False):
        cats = [str(c) for c in (row.categories if isinstance(row.categories, (list, tuple, np.ndarray)) else [])]
        year = None if row.year is None or (isinstance(row.year, float) and np.isnan(row.year)) or str(row.year) == "<NA>" else int(row.year)
        out[int(row.item)] = {"id": int(row.item), "title": str(row.title or "").strip() or f"item {int(row.item)}",
                              "categories": cats, "genres": cats, "brand": str(row.brand or ""),
                              "description": str(row.description or ""), "year": year}
    return out


_MARK = r"(?:^|(?<=[\s:]))[*#_\s]*(?:step\s*)?\(?{n}\s*[.):]\**(?:\s+|$)"  # {n}: the number


def _numbered(text: str, count: int, step_words: bool = False) -> list[str] | None:
    """The texts after ``count`` consecutively numbered markers (``1.``, ``1)``, ``(1)``, ``**1.**``,
    ``Step 1:``), in order; numbering from 1 is preferred, but a small model that goes on counting after a
    few-shot example ("3. … 4. …") is accepted too. None when no such run of markers exists. Text after the
    last part's paragraph is dropped."""
    text = text.replace("\r", "")
    first = [int(m.group(1)) for m in re.finditer(_MARK.format(n=r"(\d)"), text, re.I | re.M)]
    for start in dict.fromkeys([1, *first]):
        starts, pos = [], 0
        for n in range(start, start + count):
            m = re.compile(_MARK.format(n=n), re.I | re.M).search(text, pos)
            if not m:
                break
            starts.append(m)
            pos = m.end()
        if len(starts) == count:
            break
    else:
        return None
    parts = []
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < count else len(text)
        part = text[m.end():end]
        if i + 1 == count:
            part = re.split(r"\n\s*\n|\n\s*(?:\d+\s*[.)]|step\s*\d)", part, maxsplit=1, flags=re.I)[0]
        parts.append(part)
    return parts


def _first_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _clean(text: str) -> str:
    text = re.sub(r"[*_`#]+", "", text)
    text = re.sub(r"^\s*(?:user(?:'s)? preferences?|item(?:'s)? attributes?|preferences?|categor(?:y|ies)|items?)\s*:\s*",
                  "", text.strip(), flags=re.I)
    return re.sub(r"\s+", " ", text).strip()
