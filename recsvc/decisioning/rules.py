"""Customer rules of offers: a small expression language, parsed once and compiled to closures.

    churn_risk >= 0.6 and plan == 'premium'
    not (context.intent == "upgrade") or clv > 1000
    region in ['north', 'east'] and context.tenure_months >= 12

Namespace: a bare name is a customer attribute of the customers table (``clv``, ``churn_risk``
or any extra column), published in the customer record, so an unknown bare name is an error at
training and load time. ``context.<key>`` is what the caller sent in the request's ``context``
map; it is not known in advance, so any key is accepted. Context values are text: compared with
a number they are read as numbers (a value that does not parse is missing).

Grammar: ``or``/``and``/``not`` (also ``||``/``&&``/``!``), parentheses, comparisons
``== != < <= > >=`` and ``in [...]`` / ``not in [...]`` between one name and literals (numbers,
'single' or "double" quoted strings). Ordering (``<`` ...) applies to numbers only.

A missing value (empty cell, absent context key) makes every comparison false, so
``churn_risk >= 0.6`` and ``churn_risk < 0.6`` are both false for a customer without a churn
risk, while ``not (churn_risk >= 0.6)`` is true.

Why our own parser rather than CEL: the language above is all offer rules need; compiled to
closures a rule costs well under a microsecond per call, with attributes addressed by position
and category literals turned into codes once (docs/PERFORMANCE.md measures both). No ``eval``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

MISSING_CODE = 0xFFFFFFFF  # a category without a value (as in the customer record)
NUMBER, CATEGORY = "number", "category"

# A compiled rule: (numbers by attribute position, category codes by position, context) -> bool
Predicate = Callable[[Sequence[float], Sequence[int], Mapping[str, str]], bool]


class RuleError(ValueError):
    """A rule that does not parse, or names an unknown attribute; the message says where."""


@dataclass(frozen=True)
class AttributeSchema:
    """The customer attributes a version publishes, in record order, with category tables."""

    names: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    values: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.kinds):
            raise ValueError("one kind per attribute is needed")
        for name, kind in zip(self.names, self.kinds, strict=True):
            if kind not in (NUMBER, CATEGORY):
                raise ValueError(f"attribute {name!r}: kind must be {NUMBER!r} or {CATEGORY!r}")

    def index(self, name: str) -> int:
        return self.names.index(name)

    @classmethod
    def from_meta(cls, attributes: Sequence[Mapping[str, str]],
                  values: Mapping[str, Sequence[str]]) -> AttributeSchema:
        """From a version meta's ``attributes`` ([{name, kind}]) and ``attribute_values``."""
        return cls(tuple(str(a["name"]) for a in attributes),
                   tuple(str(a["kind"]) for a in attributes),
                   {k: list(v) for k, v in values.items()})


# ---------------------------------------------------------------------------- parsing

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
  | (?P<op>==|!=|<=|>=|<|>|&&|\|\||!|\(|\)|\[|\]|,)
""", re.VERBOSE)
_WORD_OPS = {"and": "&&", "or": "||", "not": "!", "in": "in"}
_COMPARE = ("==", "!=", "<", "<=", ">", ">=")
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


@dataclass(frozen=True)
class Token:
    kind: str  # number, string, name, op
    text: str
    at: int  # 0-based character position


@dataclass(frozen=True)
class Name:
    name: str  # a bare attribute, or the key after ``context.``
    context: bool


Literal = float | str
# AST: ("and"|"or", left, right), ("not", node), ("cmp", op, Name, literal or tuple of literals)
Node = tuple[object, ...]


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    at = 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            raise RuleError(f"unexpected character {text[at]!r} at {at + 1}")
        kind = match.lastgroup or ""
        word = match.group()
        if kind == "name" and word in _WORD_OPS:
            tokens.append(Token("op", _WORD_OPS[word], at))
        elif kind != "space":
            tokens.append(Token(kind, word, at))
        at = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> Token:
        token = self.peek()
        if token is None:
            wanted = f", expected {expected!r}" if expected else ""
            raise RuleError(f"unexpected end of rule{wanted}")
        if expected is not None and token.text != expected:
            raise RuleError(f"expected {expected!r} at {token.at + 1}, got {token.text!r}")
        self.pos += 1
        return token

    def parse(self) -> Node:
        if not self.tokens:
            raise RuleError("empty rule")
        node = self.or_()
        extra = self.peek()
        if extra is not None:
            raise RuleError(f"unexpected {extra.text!r} at {extra.at + 1}")
        return node

    def or_(self) -> Node:
        node = self.and_()
        while (token := self.peek()) is not None and token.text == "||":
            self.take()
            node = ("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while (token := self.peek()) is not None and token.text == "&&":
            self.take()
            node = ("and", node, self.not_())
        return node

    def not_(self) -> Node:
        token = self.peek()
        if token is not None and token.text == "!" and token.kind == "op":
            self.take()
            return ("not", self.not_())
        if token is not None and token.text == "(":
            self.take()
            node = self.or_()
            self.take(")")
            return node
        return self.comparison()

    def comparison(self) -> Node:
        left = self.operand()
        token = self.peek()
        if token is None or (token.text not in _COMPARE and token.text not in ("in", "!")):
            where = f"at {token.at + 1}" if token is not None else "at the end"
            raise RuleError(f"expected a comparison (==, !=, <, <=, >, >=, in) {where}")
        self.take()
        op = token.text
        if op == "!":
            self.take("in")
            op = "not in"
        if op in ("in", "not in"):
            if not isinstance(left, Name):
                raise RuleError(f"'{op}' needs an attribute on its left (at {token.at + 1})")
            return ("cmp", op, left, self.literal_list())
        right = self.operand()
        if isinstance(left, Name) and not isinstance(right, Name):
            return ("cmp", op, left, right)
        if isinstance(right, Name) and not isinstance(left, Name):
            return ("cmp", _FLIP[op], right, left)
        raise RuleError(f"a comparison needs one attribute and one literal (at {token.at + 1})")

    def operand(self) -> Name | Literal:
        token = self.take()
        if token.kind == "name":
            if token.text.startswith("context."):
                return Name(token.text.removeprefix("context."), context=True)
            if "." in token.text:
                raise RuleError(f"unknown namespace in {token.text!r} at {token.at + 1}: "
                                "use a bare attribute or context.<key>")
            return Name(token.text, context=False)
        if token.kind in ("number", "string"):
            return _literal(token)
        raise RuleError(f"expected an attribute or a value at {token.at + 1}, got {token.text!r}")

    def literal_list(self) -> tuple[Literal, ...]:
        self.take("[")
        items: list[Literal] = []
        while True:
            token = self.take()
            if token.text == "]" and not items:
                break
            if token.kind not in ("number", "string"):
                raise RuleError(f"expected a value in the list at {token.at + 1}")
            items.append(_literal(token))
            closing = self.take()
            if closing.text == "]":
                break
            if closing.text != ",":
                raise RuleError(f"expected ',' or ']' at {closing.at + 1}")
        return tuple(items)


def _literal(token: Token) -> Literal:
    if token.kind == "number":
        return float(token.text)
    body = token.text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def parse(text: str) -> Node:
    """The rule's syntax tree; RuleError when it is malformed."""
    return _Parser(text).parse()


def names(node: Node) -> tuple[set[str], set[str]]:
    """(bare attribute names, context keys) a rule reads."""
    bare: set[str] = set()
    keys: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if item[0] == "cmp":
            name = item[2]
            assert isinstance(name, Name)
            (keys if name.context else bare).add(name.name)
        else:
            stack.extend(child for child in item[1:] if isinstance(child, tuple))
    return bare, keys


# ---------------------------------------------------------------------------- compiling

def compile_rule(text: str, schema: AttributeSchema) -> Predicate:
    """Parse and compile; RuleError names the problem (unknown attribute, type, syntax)."""
    return _compile(parse(text), schema)


def check_rule(text: str, known: Mapping[str, str]) -> set[str]:
    """Validate a rule against attribute kinds (name -> kind); returns the bare names it reads.

    Used at training time, before the value tables exist.
    """
    node = parse(text)
    bare, _ = names(node)
    schema = AttributeSchema(tuple(known), tuple(known.values()),
                             {n: () for n, k in known.items() if k == CATEGORY})
    _compile(node, schema)
    return bare


def _compile(node: Node, schema: AttributeSchema) -> Predicate:
    kind = node[0]
    if kind in ("and", "or"):
        left = _compile(node[1], schema)  # type: ignore[arg-type]
        right = _compile(node[2], schema)  # type: ignore[arg-type]
        if kind == "and":
            return lambda n, c, x: left(n, c, x) and right(n, c, x)
        return lambda n, c, x: left(n, c, x) or right(n, c, x)
    if kind == "not":
        inner = _compile(node[1], schema)  # type: ignore[arg-type]
        return lambda n, c, x: not inner(n, c, x)
    _, op, name, value = node
    assert isinstance(op, str) and isinstance(name, Name)
    if name.context:
        return _context_compare(op, name.name, value)
    if name.name not in schema.names:
        known = ", ".join(schema.names) or "none"
        raise RuleError(f"unknown attribute {name.name!r} (customer attributes: {known}; "
                        "live ones are context.<key>)")
    i = schema.index(name.name)
    if schema.kinds[i] == NUMBER:
        return _number_compare(op, i, name.name, value)
    return _category_compare(op, i, name.name, value, schema.values.get(name.name, ()))


def _numbers(name: str, value: object) -> tuple[float, ...]:
    items = value if isinstance(value, tuple) else (value,)
    if not all(isinstance(v, float) for v in items):
        raise RuleError(f"{name!r} is a number: compare it with numbers, not text")
    return tuple(float(v) for v in items if isinstance(v, float))


def _texts(name: str, value: object) -> tuple[str, ...]:
    items = value if isinstance(value, tuple) else (value,)
    if not all(isinstance(v, str) for v in items):
        raise RuleError(f"{name!r} is a category: compare it with quoted text, not numbers")
    return tuple(str(v) for v in items)


def _number_compare(op: str, i: int, name: str, value: object) -> Predicate:
    literals = _numbers(name, value)
    if op in ("in", "not in"):
        allowed = frozenset(literals)
        if op == "in":
            return lambda n, c, x: n[i] in allowed
        return lambda n, c, x: n[i] == n[i] and n[i] not in allowed
    v = literals[0]
    # NaN (missing) compares false with every operator but !=, which is guarded.
    if op == "==":
        return lambda n, c, x: n[i] == v
    if op == "!=":
        return lambda n, c, x: n[i] == n[i] and n[i] != v
    if op == "<":
        return lambda n, c, x: n[i] < v
    if op == "<=":
        return lambda n, c, x: n[i] <= v
    if op == ">":
        return lambda n, c, x: n[i] > v
    return lambda n, c, x: n[i] >= v


def _category_compare(op: str, i: int, name: str, value: object,
                      table: Sequence[str]) -> Predicate:
    if op not in ("==", "!=", "in", "not in"):
        raise RuleError(f"{name!r} is a category: only ==, != and in apply, not {op!r}")
    literals = _texts(name, value)
    position = {text: code for code, text in enumerate(table)}
    codes = frozenset(position[t] for t in literals if t in position)
    if op in ("==", "in"):
        if len(codes) == 1:
            (code,) = codes
            return lambda n, c, x: c[i] == code
        return lambda n, c, x: c[i] in codes
    return lambda n, c, x: c[i] != MISSING_CODE and c[i] not in codes


def _as_number(text: str | None) -> float:
    if text is None:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


def _context_compare(op: str, key: str, value: object) -> Predicate:
    items = value if isinstance(value, tuple) else (value,)
    if items and all(isinstance(v, float) for v in items):
        numbers = _numbers(f"context.{key}", value)
        inner = _number_compare(op, 0, key, numbers if isinstance(value, tuple) else numbers[0])
        no_codes: tuple[int, ...] = ()
        return lambda n, c, x: inner((_as_number(x.get(key)),), no_codes, x)
    texts = _texts(f"context.{key}", value)
    if op not in ("==", "!=", "in", "not in"):
        raise RuleError(f"context.{key} compared with text: only ==, != and in apply")
    allowed = frozenset(texts)
    if op in ("==", "in"):
        return lambda n, c, x: x.get(key) in allowed
    return lambda n, c, x: key in x and x[key] not in allowed
