"""Selections, weights and new variables written as strings in ``input.yml``.

A small, restricted language with Python's syntax (docs/expressions.md has the grammar): a string
is parsed with :mod:`ast` and every node is checked against a whitelist, then the tree is
evaluated column-wise, with NumPy on whole arrays. Nothing a user writes is ever given to
``eval``, ``exec`` or ``compile``.

Three pure steps:

- :func:`parse` turns a string into an :class:`Expression` (syntax and constructs);
- :func:`check` gives its static :class:`Kind` from the kinds of the names it reads (unknown
  names, per-event against per-object values, numbers against conditions);
- :func:`evaluate` computes it on columns: NumPy arrays (one value per event) and awkward arrays
  (flat, or jagged ``var * dtype`` as uproot reads them).

A jagged column is held as its offsets and its flat content, so elementwise work is one NumPy
call on the content, a per-event value meets a per-object one through ``np.repeat``, and the
reductions are ``ufunc.reduceat`` over the non-empty events.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import awkward as ak
import numpy as np

from .exceptions import ExpressionError, format_closest

FIX = "fix the expression in input.yml"
ALLOWED = (
    "expressions use branch names, numbers, True/False, operators and the functions of "
    "docs/expressions.md"
)

# ---------------------------------------------------------------------------------------------
# the tree


@dataclass(frozen=True)
class _Name:
    name: str
    start: int  # character offsets into the (one-line) source
    end: int


@dataclass(frozen=True)
class _Const:
    value: bool | int | float
    start: int
    end: int


@dataclass(frozen=True)
class _Call:
    """An operator ("+", "<", "&", "u-", "~"...) or a function by its canonical name."""

    func: str
    args: tuple[_Node, ...]
    start: int
    end: int


@dataclass(frozen=True)
class _Index:
    value: _Node
    index: int
    start: int
    end: int


_Node = _Name | _Const | _Call | _Index


@dataclass(frozen=True)
class Expression:
    """A parsed expression: its text, its place in input.yml, the names it reads and the
    functions it calls (both in first-use order)."""

    source: str
    where: str
    names: tuple[str, ...]
    functions: tuple[str, ...]
    tree: _Node = field(repr=False)


@dataclass(frozen=True)
class Kind:
    """The static type of a value: one per event (``collection`` None) or one per object of
    a collection; a condition (``boolean`` True), a number (False), or not known (None: a
    branch whose dtype the kinds did not give)."""

    collection: str | None
    boolean: bool | None = False


# ---------------------------------------------------------------------------------------------
# the language

_ARITH: dict[str, Callable] = {
    "+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide,
    "//": np.floor_divide, "%": np.remainder,
}  # fmt: skip
_COMPARE: dict[str, Callable] = {
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
    "==": np.equal, "!=": np.not_equal,
}  # fmt: skip
_LOGIC: dict[str, Callable] = {"&": np.logical_and, "|": np.logical_or, "^": np.logical_xor}
_UNARY_FUNCS: dict[str, Callable] = {
    "abs": np.abs, "sqrt": np.sqrt, "log": np.log, "log10": np.log10, "exp": np.exp,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "arcsin": np.arcsin, "arccos": np.arccos,
    "arctan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh,
    "floor": np.floor, "ceil": np.ceil, "round": np.round, "isfinite": np.isfinite,
}  # fmt: skip
_BINARY_FUNCS: dict[str, Callable] = {
    "arctan2": np.arctan2, "hypot": np.hypot, "min": np.minimum, "max": np.maximum,
}  # fmt: skip
_REDUCTIONS = ("sum", "min", "max", "mean", "count", "any", "all")
#: the number of arguments each function takes
_ARITY: dict[str, tuple[int, ...]] = {
    **dict.fromkeys(_UNARY_FUNCS, (1,)),
    "arctan2": (2,), "hypot": (2,), "where": (3,),
    **dict.fromkeys(_REDUCTIONS, (1,)), "min": (1, 2), "max": (1, 2),
}  # fmt: skip
#: other names for them (NumPy's, and numpy 2's short trigonometric names); value: (name, arity)
_ALIASES: dict[str, tuple[str, tuple[int, ...] | None]] = {
    "absolute": ("abs", None), "around": ("round", None), "asin": ("arcsin", None),
    "acos": ("arccos", None), "atan": ("arctan", None), "atan2": ("arctan2", None),
    "minimum": ("min", (2,)), "maximum": ("max", (2,)), "amin": ("min", (1,)),
    "amax": ("max", (1,)),
}  # fmt: skip
_BINOPS = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
    ast.Pow: "**", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^",
}  # fmt: skip
_CMPOPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_UNOPS = {ast.USub: "u-", ast.UAdd: "u+", ast.Invert: "~", ast.Not: "~"}
_REFUSED_OPS = {
    ast.MatMult: "'@'", ast.LShift: "'<<'", ast.RShift: "'>>'", ast.In: "'in'",
    ast.NotIn: "'not in'", ast.Is: "'is'", ast.IsNot: "'is not'",
}  # fmt: skip
#: refused constructs: (what it is, the fix)
_REFUSED: dict[type, tuple[str, str]] = {
    ast.Lambda: ("a lambda", ALLOWED),
    ast.IfExp: ("a conditional expression 'a if c else b'", "use where(c, a, b)"),
    ast.JoinedStr: ("an f-string", ALLOWED),
    ast.ListComp: ("a comprehension", "use the reductions sum, min, max, mean, count, any, all"),
    ast.SetComp: ("a comprehension", "use the reductions sum, min, max, mean, count, any, all"),
    ast.DictComp: ("a comprehension", "use the reductions sum, min, max, mean, count, any, all"),
    ast.GeneratorExp: ("a comprehension", "use the reductions sum, min, max, mean, count, any"),
    ast.List: ("a list", ALLOWED),
    ast.Tuple: ("a tuple", ALLOWED),
    ast.Set: ("a set", ALLOWED),
    ast.Dict: ("a dict", ALLOWED),
    ast.NamedExpr: ("an assignment ':='", "define new variables under new_variables"),
    ast.Starred: ("a starred expression", ALLOWED),
    ast.Slice: ("a slice", "index one object with an integer: Jet_pt[0] (leading), Jet_pt[-1]"),
}


#: operators and calls nested deeper than this are refused, so that checking and evaluating
#: (recursive, two frames a level) stay far from Python's recursion limit
MAX_DEPTH = 200
_DEEP = f"an expression nested more than {MAX_DEPTH} levels deep"
_DEEP_FIX = "split it into new variables (new_variables in input.yml)"


def _functions() -> list[str]:
    return sorted({*_ARITY, *_ALIASES})


# ---------------------------------------------------------------------------------------------
# parse


def _line(source: str) -> str:
    """The expression on one line (YAML block scalars may break it), offsets kept."""
    return source.replace("\r", " ").replace("\n", " ").replace("\t", " ")


def parse(source: str, where: str) -> Expression:
    """Parse ``source`` (the text at ``where`` in input.yml, e.g. ``new_variables.ht``).

    Raises :class:`ExpressionError` for a syntax error or a construct outside the language,
    with a caret under its column.
    """
    text = _line(source)
    if not text.strip():
        raise ExpressionError("empty expression", where, f"write one, e.g. HT > 300; {FIX}")
    if "#" in text:
        col = text.index("#") + 1
        raise ExpressionError("a comment '#' is not allowed", where, FIX, text, col)
    body, origin = _logical_words(text)
    try:
        tree = ast.parse(body, mode="eval")
    except (RecursionError, MemoryError):
        raise ExpressionError(_DEEP, where, _DEEP_FIX, text) from None
    except SyntaxError as err:
        offset = err.offset if err.offset and err.offset > 0 else len(body) + 1
        col = origin[min(offset, len(body) + 1) - 1] + 1
        raise ExpressionError("syntax error", where, FIX, text, col, err.msg) from None
    root = _Builder(body, origin, where, text).node(tree.body)
    names: dict[str, None] = {}
    functions: dict[str, None] = {}
    _collect(root, names, functions)
    return Expression(source, where, tuple(names), tuple(functions), root)


def _logical_words(text: str) -> tuple[str, list[int]]:
    """``text`` without its leading blanks and with the operators ``&`` and ``|`` written as
    ``and`` and ``or``, so that they bind looser than comparisons: ``njet >= 4 & HT > 300`` is
    two cuts, as ROOT's ``&&`` and pandas' ``query`` read it (Python would read
    ``njet >= (4 & HT) > 300``). ``origin[i]`` is where the new text's character ``i`` was.
    """
    lead = len(text) - len(text.lstrip())
    body = text[lead:]
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(body).readline))
    except (tokenize.TokenError, SyntaxError):  # ast.parse reports it with its column
        tokens = []
    pieces: list[str] = []
    origin: list[int] = []
    last = 0
    for token in tokens:
        if token.type == tokenize.OP and token.string in ("&", "|"):
            col = token.start[1]
            word = " and " if token.string == "&" else " or "
            pieces += [body[last:col], word]
            origin += [*range(lead + last, lead + col), *[lead + col] * len(word)]
            last = col + 1
    pieces.append(body[last:])
    origin += range(lead + last, lead + len(body) + 1)
    return "".join(pieces), origin


def conjuncts(expr: Expression) -> list[tuple[str, Expression]]:
    """The terms of a selection joined by ``&``/``and`` at its top level, in order, each with
    its text: ``"nJet >= 2 & (HT > 300)"`` is ``nJet >= 2`` then ``(HT > 300)``. Each term is
    an expression of its own over the same source (messages point into the whole selection);
    a selection that is not such a conjunction is one term."""
    terms: list[_Node] = []
    todo = [expr.tree]
    while todo:
        node = todo.pop()
        if isinstance(node, _Call) and node.func == "&":
            todo.extend(reversed(node.args))
        else:
            terms.append(node)
    out = []
    for node in terms:
        names: dict = {}
        functions: dict = {}
        _collect(node, names, functions)
        term = replace(expr, names=tuple(names), functions=tuple(functions), tree=node)
        out.append((expr.source[node.start : node.end].strip(), term))
    return out


def _collect(node: _Node, names: dict, functions: dict) -> None:
    if isinstance(node, _Name):
        names.setdefault(node.name)
    elif isinstance(node, _Index):
        _collect(node.value, names, functions)
    elif isinstance(node, _Call):
        if node.func in _ARITY:
            functions.setdefault(node.func)
        for arg in node.args:
            _collect(arg, names, functions)


class _Builder:
    """Turns Python's tree into the whitelisted one, refusing every other construct."""

    def __init__(self, body: str, origin: list[int], where: str, text: str) -> None:
        self.encoded = body.encode("utf-8")
        self.ascii = body.isascii()
        self.origin, self.where, self.text = origin, where, text
        self.depth = 0

    def _col(self, byte_offset: int) -> int:
        """ast's UTF-8 byte offset as a character offset into the displayed text."""
        if not self.ascii:
            byte_offset = len(self.encoded[:byte_offset].decode("utf-8", "ignore"))
        return self.origin[byte_offset]

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self._col(node.col_offset), self._col(node.end_col_offset or node.col_offset)

    def refuse(self, node: ast.AST, what: str, fix: str) -> ExpressionError:
        col = self._col(node.col_offset) + 1
        return ExpressionError(f"{what} is not allowed", self.where, fix, self.text, col)

    def node(self, node: ast.AST) -> _Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.refuse(node, _DEEP, _DEEP_FIX)
        try:
            return self._node(node)
        finally:
            self.depth -= 1

    def _node(self, node: ast.AST) -> _Node:
        start, end = self.span(node)
        if isinstance(node, ast.Constant):
            return _Const(self._constant(node), start, end)
        if isinstance(node, (ast.Name, ast.Attribute)):
            return _Name(self._dotted(node), start, end)
        if isinstance(node, ast.BinOp):
            op = self._op(node, node.op, _BINOPS)
            return _Call(op, (self.node(node.left), self.node(node.right)), start, end)
        if isinstance(node, ast.UnaryOp):
            return _Call(_UNOPS[type(node.op)], (self.node(node.operand),), start, end)
        if isinstance(node, ast.BoolOp):
            op = "&" if isinstance(node.op, ast.And) else "|"
            values = [self.node(v) for v in node.values]
            out = values[0]
            for value in values[1:]:
                out = _Call(op, (out, value), start, value.end)
            return out
        if isinstance(node, ast.Compare):
            return self._compare(node)
        if isinstance(node, ast.Call):
            return self._call(node, start, end)
        if isinstance(node, ast.Subscript):
            return _Index(self.node(node.value), self._index(node.slice), start, end)
        what, fix = _REFUSED.get(type(node), (f"the construct {type(node).__name__}", ALLOWED))
        raise self.refuse(node, what, fix)

    def _constant(self, node: ast.Constant) -> bool | int | float:
        value = node.value
        if isinstance(value, (bool, float)):
            return value
        if isinstance(value, int):
            if not -(2**63) <= value < 2**63:
                raise self.refuse(node, "an integer beyond 64 bits", "write it as a float: 1e20")
            return value
        if isinstance(value, (str, bytes)):
            fix = "expressions compute on numbers and conditions; remove the quotes"
            raise self.refuse(node, "a string constant", fix)
        what = "a complex number" if isinstance(value, complex) else repr(value)
        raise self.refuse(node, what, ALLOWED)

    def _dotted(self, node: ast.AST) -> str:
        """``Jet.PT`` (an attribute chain over a name) as one dotted name."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            raise self.refuse(node, "an attribute of a computed value", ALLOWED)
        return ".".join([node.id, *reversed(parts)])

    def _op(self, node: ast.AST, op: ast.AST, table: dict) -> str:
        if type(op) in table:
            return table[type(op)]
        fix = "& | ^ ~ combine conditions; there are no bit operations on numbers"
        if isinstance(op, (ast.In, ast.NotIn, ast.Is, ast.IsNot)):
            fix = "compare numbers with < <= > >= == !="
        raise self.refuse(node, f"the operator {_REFUSED_OPS.get(type(op), '?')}", fix)

    def _compare(self, node: ast.Compare) -> _Node:
        """``a < b < c`` is ``(a < b) & (b < c)``."""
        operands = [self.node(node.left), *(self.node(c) for c in node.comparators)]
        out: _Node | None = None
        for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
            part = _Call(self._op(node, op, _CMPOPS), (left, right), left.start, right.end)
            out = part if out is None else _Call("&", (out, part), out.start, part.end)
        assert out is not None
        return out

    def _call(self, node: ast.Call, start: int, end: int) -> _Call:
        name = self._function_name(node.func)
        for keyword in node.keywords:
            what = f"a keyword argument '{keyword.arg}='" if keyword.arg else "a '**' argument"
            fix = "functions take positional arguments only; reductions are always per event"
            raise self.refuse(keyword, what, fix)
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.refuse(arg, "a starred argument", ALLOWED)
        canonical, arity = _ALIASES.get(name, (name, None))
        if canonical not in _ARITY:
            col = self._col(node.col_offset) + 1
            fix = f"use one of: {', '.join(sorted(_ARITY))} (docs/expressions.md)"
            detail = format_closest(name, _functions(), 3)
            raise ExpressionError(
                f"unknown function {name!r}", self.where, fix, self.text, col, detail
            )
        arity = arity or _ARITY[canonical]
        if len(node.args) not in arity:
            want = " or ".join(map(str, arity))
            raise self.refuse(
                node, f"{name}() with {len(node.args)} arguments", f"{name}() takes {want}"
            )
        return _Call(canonical, tuple(self.node(a) for a in node.args), start, end)

    def _function_name(self, func: ast.AST) -> str:
        if isinstance(func, ast.Name):
            return func.id
        prefix = func.value if isinstance(func, ast.Attribute) else None
        if isinstance(prefix, ast.Name) and prefix.id in ("np", "numpy"):
            return func.attr  # type: ignore[union-attr]
        if isinstance(func, ast.Attribute):
            what = f"a method call '.{func.attr}()'"
            raise self.refuse(func, what, f"call functions by name: {func.attr}(x)")
        raise self.refuse(func, "calling a computed value", ALLOWED)

    def _index(self, node: ast.AST) -> int:
        value = node
        sign = 1
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            sign = -1 if isinstance(node.op, ast.USub) else 1
            value = node.operand
        if isinstance(value, ast.Constant) and type(value.value) is int:
            return sign * value.value
        if isinstance(node, (ast.Slice, ast.Tuple)):
            what = "a slice" if isinstance(node, ast.Slice) else "a multi-dimensional index"
            raise self.refuse(node, what, _REFUSED[ast.Slice][1])
        fix = "index with an integer constant: Jet_pt[0] (leading object), Jet_pt[-1] (last)"
        raise self.refuse(node, "an index that is not an integer constant", fix)


# ---------------------------------------------------------------------------------------------
# check


def _snippet(expr: Expression, node: _Node) -> str:
    return _line(expr.source)[node.start : node.end]


def _error(expr: Expression, node: _Node, problem: str, fix: str, detail: str | None = None):
    return ExpressionError(problem, expr.where, fix, _line(expr.source), node.start + 1, detail)


def check(expr: Expression, kinds: Mapping[str, str | Kind | None]) -> Kind:
    """The static :class:`Kind` of ``expr``'s result.

    ``kinds`` maps every available name to None (one value per event), the name of its
    collection (one value per object: ``"Jet"`` for ``Jet_pt``) or a :class:`Kind` (which also
    says whether it is a condition, e.g. for bool branches and new variables). Raises
    :class:`ExpressionError` for unknown names and for values of the wrong kind.
    """
    return _Checker(expr, kinds).kind(expr.tree)


class _Checker:
    def __init__(self, expr: Expression, kinds: Mapping[str, str | Kind | None]) -> None:
        self.expr, self.kinds = expr, kinds

    def kind(self, node: _Node) -> Kind:
        if isinstance(node, _Const):
            return Kind(None, isinstance(node.value, bool))
        if isinstance(node, _Name):
            return self._name(node)
        if isinstance(node, _Index):
            value = self.kind(node.value)
            if value.collection is None:
                raise self._flat(node.value, f"indexing [{node.index}]")
            return Kind(None, value.boolean)
        args = [self.kind(a) for a in node.args]
        func = node.func
        if func in _REDUCTIONS and len(args) == 1:
            return self._reduction(node, args[0])
        if func in _LOGIC or func == "~":
            self._conditions(node, node.args, args, f"'{func}'")
            return Kind(self._join(node, args), True)
        if func == "where":
            self._conditions(node, node.args[:1], args[:1], "where()'s first argument")
            a, b = args[1].boolean, args[2].boolean
            boolean = False if False in (a, b) else (True if a and b else None)
            return Kind(self._join(node, args), boolean)
        return Kind(self._join(node, args), func in _COMPARE or func == "isfinite")

    def _name(self, node: _Name) -> Kind:
        name = node.name
        if name in self.kinds:
            kind = self.kinds[name]
            return kind if isinstance(kind, Kind) else Kind(kind, None)
        bare = name.removeprefix("np.").removeprefix("numpy.")
        if bare in _ARITY or bare in _ALIASES:
            raise _error(
                self.expr, node, f"the function {name!r} used as a value", f"call it: {bare}(x)"
            )
        detail = format_closest(name, self.kinds) if self.kinds else "no names are available"
        fix = "use a branch of the tree or a new variable defined in input.yml"
        raise _error(self.expr, node, f"unknown name {name!r}", fix, detail)

    def _flat(self, node: _Node, what: str) -> ExpressionError:
        snippet = _snippet(self.expr, node)
        fix = (
            "sum, min, max, mean, count, any, all and [i] take a per-object value such as "
            f"Jet_pt; use {snippet} directly"
        )
        return _error(
            self.expr, node, f"{what} of a per-event value", fix, f"{snippet!r} is one per event"
        )

    def _reduction(self, node: _Call, arg: Kind) -> Kind:
        if arg.collection is None:
            raise self._flat(node.args[0], f"{node.func}()")
        if node.func in ("any", "all") and arg.boolean is False:
            snippet = _snippet(self.expr, node.args[0])
            fix = f"compare it first, e.g. {node.func}({snippet} > 30)"
            raise _error(
                self.expr, node, f"{node.func}() needs a condition", fix, f"{snippet!r} is a number"
            )
        return Kind(None, node.func in ("any", "all"))

    def _conditions(self, node: _Call, nodes, args: list[Kind], what: str) -> None:
        for sub, kind in zip(nodes, args, strict=False):
            if kind.boolean is False:
                snippet = _snippet(self.expr, sub)
                fix = (
                    f"& | ^ ~ and/or/not combine conditions: compare the number first, e.g. "
                    f"({snippet} > 0); ^ and ~ bind tighter than comparisons, so write "
                    "~(x > 1) and (x > 1) ^ (y > 2)"
                )
                detail = f"{snippet!r} is a number"
                raise _error(self.expr, node, f"{what} needs conditions", fix, detail)

    def _join(self, node: _Call, args: list[Kind]) -> str | None:
        """The one collection the per-object operands share (None if all are per event)."""
        seen: dict[str, _Node] = {}
        for sub, kind in zip(node.args, args, strict=True):
            if kind.collection is not None:
                seen.setdefault(kind.collection, sub)
        if len(seen) > 1:
            (a, a_node), (b, b_node) = list(seen.items())[:2]
            sa, sb = _snippet(self.expr, a_node), _snippet(self.expr, b_node)
            detail = f"{sa!r} is one value per {a} object, {sb!r} one per {b} object"
            fix = f"reduce one of them to one value per event first, e.g. max({sb}) or {sb}[0]"
            raise _error(self.expr, node, "values of two collections combined", fix, detail)
        return next(iter(seen), None)


def require_event_level(expr: Expression, kind: Kind, *, condition: bool = False) -> None:
    """Raise unless ``kind`` is one value per event (``selection``, ``weight``); with
    ``condition`` it must also be a condition (a selection)."""
    text = _line(expr.source)
    if kind.collection is not None:
        if kind.boolean:
            problem = "a condition per object where one per event is needed"
            fix = (
                "a collection compared with a number gives one value per object; "
                "wrap it in any(...) or all(...), e.g. any(Jet_pt > 30)"
            )
        else:
            problem = "one value per object where one per event is needed"
            fix = "reduce it to one per event: sum(...), max(...), count(...), or Jet_pt[0]"
        detail = f"it gives one value per {kind.collection} object"
        raise ExpressionError(problem, expr.where, fix, text, detail=detail)
    if condition and kind.boolean is False:
        fix = "compare it, e.g. HT > 300: a selection keeps the events where it is true"
        raise ExpressionError("a number where a condition is needed", expr.where, fix, text)


def require_object_level(expr: Expression, kind: Kind, collection: str) -> None:
    """Raise unless ``kind`` is a condition on the objects of ``collection`` (or one per event,
    which holds for every object of the event) (``object_selection.<collection>``)."""
    text = _line(expr.source)
    if kind.collection not in (None, collection):
        problem = f"a condition on {kind.collection} objects where {collection} objects are cut"
        fix = (
            f"use {collection} branches; reduce a {kind.collection} branch first, e.g. with "
            "any(...) or max(...)"
        )
        raise ExpressionError(problem, expr.where, fix, text)
    if kind.boolean is False:
        fix = f"compare it with a number, e.g. ... > 25: the cut keeps the {collection} objects"
        fix += " where it is true"
        raise ExpressionError("a number where a condition is needed", expr.where, fix, text)


def per_object(values: np.ndarray | ak.Array, like: ak.Array) -> ak.Array:
    """An object selection's result as one value per object of ``like`` (a branch of the
    collection): a per-event condition holds for every object of its event. (Indexing jets
    with a per-event mask, ``Jet_pt[mask]``, would select events instead.)"""
    if isinstance(values, ak.Array) and values.ndim == 2:
        return values
    return ak.broadcast_arrays(ak.Array(np.asarray(values)), like)[0]


def order(definitions: Mapping[str, Expression], branches: Collection[str]) -> list[str]:
    """The new variables in an order that defines each before its first use.

    Raises :class:`ExpressionError` for a name that is also a branch (it would hide it) and for
    variables that depend on each other in a cycle (named in the message).
    """
    for name, expr in definitions.items():
        if name in branches:
            fix = f"rename the new variable: it would hide the branch {name!r}"
            raise ExpressionError(
                f"new variable {name!r} has the name of a branch", expr.where, fix, expr.source
            )
    deps = {name: [n for n in e.names if n in definitions] for name, e in definitions.items()}
    done: dict[str, None] = {}
    for name in definitions:
        _visit(name, deps, done, [], definitions)
    return list(done)


def _visit(name, deps, done, path: list[str], definitions: Mapping[str, Expression]) -> None:
    if name in done:
        return
    if name in path:
        cycle = [*path[path.index(name) :], name]
        expr = definitions[name]
        fix = "define one of them from branches only"
        detail = " -> ".join(cycle)
        raise ExpressionError(
            "new variables defined in a cycle", expr.where, fix, expr.source, detail=detail
        )
    path.append(name)
    for dep in deps[name]:
        _visit(dep, deps, done, path, definitions)
    path.pop()
    done[name] = None


# ---------------------------------------------------------------------------------------------
# evaluate


class _Jagged(NamedTuple):
    """Per-object values: ``content[offsets[i]:offsets[i+1]]`` belong to event ``i``."""

    offsets: np.ndarray  # int64, n_events + 1, starting at 0
    content: np.ndarray


#: the collection that evaluate's own check gives every jagged column (it cannot know theirs)
_ANY = "jagged"


def evaluate(
    expr: Expression, columns: Mapping[str, object], n_events: int | None = None
) -> np.ndarray | ak.Array:
    """Compute ``expr`` on ``columns`` (name -> NumPy array or awkward array, one entry per
    event). A per-event result is a NumPy array of length n_events, a per-object one an
    awkward ``var * dtype`` array.

    Call :func:`check` with the branches' collections first: evaluate knows only flat from
    jagged, so it catches two collections combined only where their object counts differ.
    ``n_events`` is needed only for an expression that reads no column.
    """
    values = {name: _column(expr, name, columns[name]) for name in expr.names if name in columns}
    kinds = {name: _kind_of(v) for name, v in values.items()}
    check(expr, {**dict.fromkeys(columns), **kinds})
    n = _n_events(expr, values, columns, n_events)
    with np.errstate(all="ignore"):
        result = _Evaluator(expr, values).value(expr.tree)
    if isinstance(result, _Jagged):
        offsets = ak.index.Index64(result.offsets)
        return ak.Array(
            ak.contents.ListOffsetArray(offsets, ak.contents.NumpyArray(result.content))
        )
    if np.ndim(result) == 0:
        return np.full(n, result)
    return result


def _column(expr: Expression, name: str, value: object) -> np.ndarray | _Jagged:
    array = value if isinstance(value, ak.Array) else np.asarray(value)
    if array.ndim not in (1, 2):
        fix = "use a branch with one value per event or per object (not a vector of vectors)"
        raise ExpressionError(
            f"column {name!r} has {array.ndim} dimensions", expr.where, fix, expr.source
        )
    if isinstance(array, ak.Array):
        return ak.to_numpy(array) if array.ndim == 1 else _lists(array)
    if array.ndim == 2:  # a fixed-size array per event
        offsets = np.arange(0, array.size + 1, max(array.shape[1], 1), dtype=np.int64)
        return _Jagged(offsets[: len(array) + 1], array.reshape(-1))
    return array


def _lists(value: ak.Array) -> _Jagged:
    """Offsets and content of a jagged array: uproot's ``ListOffsetArray`` of numbers as it is
    (no copy), any other layout through ``ak.num`` and ``ak.flatten``."""
    layout = value.layout
    if isinstance(layout, ak.contents.ListOffsetArray) and isinstance(
        layout.content, ak.contents.NumpyArray
    ):
        offsets = np.asarray(layout.offsets.data, dtype=np.int64)
        start, stop = int(offsets[0]), int(offsets[-1])
        content = np.asarray(layout.content.data)[start:stop]
        return _Jagged(offsets - start if start else offsets, content)
    counts = ak.to_numpy(ak.num(value, axis=1)).astype(np.int64)
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return _Jagged(offsets, ak.to_numpy(ak.flatten(value, axis=1)))


def _kind_of(value: np.ndarray | _Jagged) -> Kind:
    if isinstance(value, _Jagged):
        return Kind(_ANY, value.content.dtype == np.bool_)
    return Kind(None, value.dtype == np.bool_)


def _n_events(expr, values, columns, n_events) -> int:
    lengths = {
        name: len(v.offsets) - 1 if isinstance(v, _Jagged) else len(v) for name, v in values.items()
    }
    if len(set(lengths.values())) > 1:
        fix = "give evaluate columns of one range of events"
        detail = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        raise ExpressionError(
            "columns of different lengths", expr.where, fix, expr.source, detail=detail
        )
    if lengths:
        return next(iter(lengths.values()))
    if n_events is None and columns:
        return len(next(iter(columns.values())))  # type: ignore[arg-type]
    if n_events is None:
        fix = "pass n_events to evaluate"
        raise ExpressionError(
            "an expression without names needs the number of events", expr.where, fix, expr.source
        )
    return n_events


def _numbers(args: list) -> list:
    """Conditions in arithmetic count as 0 and 1, as Python's ``True + True == 2``: beside a
    float NumPy already does so (keeping float32 float32); otherwise they become int64."""
    if any(_dtype(a).kind in "fc" for a in args):
        return args
    return [_number(a) for a in args]


def _dtype(value) -> np.dtype:
    return value.content.dtype if isinstance(value, _Jagged) else np.asarray(value).dtype


def _number(value):
    if isinstance(value, _Jagged):
        return _Jagged(value.offsets, _number(value.content))
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, np.ndarray) and value.dtype == np.bool_:
        return value.astype(np.int64)
    return value


def _is_integer(value) -> bool:
    return np.asarray(value).dtype.kind in "iu" if not isinstance(value, int) else True


def _power(base, exponent):
    """``**`` as NumPy computes it, except that an integer to an integer power that is not a
    constant >= 0 is computed in float64 (NumPy refuses negative integer powers)."""
    constant = np.ndim(exponent) == 0 and exponent >= 0
    if _is_integer(base) and _is_integer(exponent) and not constant:
        base = np.asarray(base, dtype=np.float64)
    return np.power(base, exponent)


class _Evaluator:
    def __init__(self, expr: Expression, values: Mapping[str, np.ndarray | _Jagged]) -> None:
        self.expr, self.values = expr, values
        #: per offsets array, each object's event: a per-event value meets per-object ones
        #: as ``value[parents]``
        self.parents: list[tuple[np.ndarray, np.ndarray]] = []

    def _parents(self, offsets: np.ndarray) -> np.ndarray:
        for known, parents in self.parents:
            if known is offsets:
                return parents
        counts = np.diff(offsets)
        parents = np.repeat(np.arange(len(counts)), counts)
        self.parents.append((offsets, parents))
        return parents

    def value(self, node: _Node):
        if isinstance(node, _Const):
            return node.value
        if isinstance(node, _Name):
            return self.values[node.name]
        if isinstance(node, _Index):
            return _index(self.value(node.value), node.index)
        args = [self.value(a) for a in node.args]
        try:
            return self._apply(node, args)
        except OverflowError as err:
            fix = "write the constant as a float, e.g. 1e12"
            raise _error(self.expr, node, "a constant out of range", fix, str(err)) from None

    def _apply(self, node: _Call, args: list):
        func = node.func
        if func in _REDUCTIONS and len(args) == 1:
            return _reduce(func, args[0])
        if func in _ARITH:
            return self._elementwise(node, _ARITH[func], _numbers(args))
        if func == "**":
            return self._elementwise(node, _power, _numbers(args))
        if func in _COMPARE:
            return self._elementwise(node, _COMPARE[func], args)
        if func in _LOGIC:
            return self._elementwise(node, _LOGIC[func], args)
        if func == "~":
            return self._elementwise(node, np.logical_not, args)
        if func == "where":
            return self._elementwise(node, np.where, args)
        if func in ("u-", "u+"):
            ufunc = np.negative if func == "u-" else np.positive
            return self._elementwise(node, ufunc, _numbers(args))
        table = _UNARY_FUNCS if len(args) == 1 else _BINARY_FUNCS
        return self._elementwise(node, table[func], _numbers(args))

    def _elementwise(self, node: _Call, func: Callable, args: list):
        jagged = [(i, a) for i, a in enumerate(args) if isinstance(a, _Jagged)]
        if not jagged:
            return func(*args)
        first, offsets = jagged[0][0], jagged[0][1].offsets
        for i, other in jagged[1:]:
            if other.offsets is not offsets and not np.array_equal(other.offsets, offsets):
                raise self._mismatch(node, node.args[first], node.args[i], offsets, other.offsets)
        contents = [
            a.content
            if isinstance(a, _Jagged)
            else np.take(a, self._parents(offsets))
            if np.ndim(a)
            else a
            for a in args
        ]
        return _Jagged(offsets, func(*contents))

    def _mismatch(self, node, a, b, offsets, other) -> ExpressionError:
        sa, sb = _snippet(self.expr, a), _snippet(self.expr, b)
        if len(offsets) == len(other):
            events = np.count_nonzero(np.diff(offsets) != np.diff(other))
            where = f"in {events} of {len(offsets) - 1} events"
        else:
            where = f"in {len(offsets) - 1} and {len(other) - 1} events"
        detail = f"{sa!r} and {sb!r} have different numbers of objects {where}"
        fix = f"combine branches of one collection, or reduce one first, e.g. max({sb})"
        return _error(self.expr, node, "per-object values of different collections", fix, detail)


def _index(value: _Jagged, k: int) -> np.ndarray:
    """Object ``k`` of every event (negative: from the end); NaN (False for conditions) where
    an event has too few objects."""
    counts = np.diff(value.offsets)
    position = value.offsets[:-1] + k if k >= 0 else value.offsets[1:] + k
    present = counts > k if k >= 0 else counts >= -k
    content = value.content
    if content.dtype == np.bool_:
        out = np.zeros(len(counts), np.bool_)
    else:
        dtype = content.dtype if content.dtype.kind == "f" else np.float64
        out = np.full(len(counts), np.nan, dtype)
    out[present] = content[position[present]]
    return out


_AWKWARD_REDUCERS = {"sum": ak.sum, "any": ak.any, "all": ak.all, "min": ak.min, "max": ak.max}


def _reduce(func: str, value: _Jagged) -> np.ndarray:
    """One value per event, by awkward's reducers (faster than ``ufunc.reduceat`` on a few
    objects an event, and the same by construction); empty events give sum 0, count 0,
    any False, all True, min/max/mean NaN."""
    content = value.content
    if func == "count":
        if content.dtype != np.bool_:
            return np.diff(value.offsets)
        func = "sum"
    if func == "mean":
        counts = np.diff(value.offsets)
        dtype = content.dtype if content.dtype.kind == "f" else np.float64
        return (_reduce("sum", value) / counts.astype(dtype)).astype(dtype, copy=False)
    if func in ("min", "max"):
        content = _number(content)
    lists = ak.contents.ListOffsetArray(
        ak.index.Index64(value.offsets), ak.contents.NumpyArray(content)
    )
    out = ak.to_numpy(_AWKWARD_REDUCERS[func](lists, axis=1, mask_identity=False))
    if func in ("min", "max"):
        dtype = content.dtype if content.dtype.kind == "f" else np.float64
        out = out.astype(dtype, copy=False)
        out[value.offsets[1:] == value.offsets[:-1]] = np.nan
    return out
