"""Kubernetes label selectors (``metav1.LabelSelector``): parse, match, and find objects in a cache.

A plugin that selects pods or namespaces (EgressIP's ``namespaceSelector`` and
``podSelector``, EgressService's ``nodeSelector``...) parses the selector once
with :func:`parse_selector` and asks the cache for what it matches with
:meth:`ovnk.core.kube.cache.Store.select`, which narrows the candidates through
a label index instead of scanning every object. The other direction (which
selectors does this one object satisfy) is :meth:`LabelSelector.matches` over
the few selectors a plugin holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class SelectorError(ValueError):
    """A selector that cannot be parsed; the message names the field."""


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` entry."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist

    def canonical(self) -> str:
        return f"LSR{{Key:{self.key},Operator:{self.operator},Values:[{' '.join(sorted(self.values))}],}}"


@dataclass(frozen=True)
class LabelSelector:
    """A ``metav1.LabelSelector``; the empty selector matches everything.

    :ivar match_labels: sorted ``(key, value)`` pairs that must all be present.
    :ivar match_expressions: requirements that must all hold.
    """

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether an object with these labels is selected."""
        labels = labels or {}
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions)

    def matches_object(self, obj: Mapping[str, Any]) -> bool:
        """:meth:`matches` on an object's ``metadata.labels``."""
        return self.matches(labels_of(obj))

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def index_terms(self) -> tuple[str, ...]:
        """The label-index values every selected object must carry (``key=value`` and ``key``)."""
        terms = [label_term(k, v) for k, v in self.match_labels]
        for req in self.match_expressions:
            if req.operator == "Exists":
                terms.append(label_term(req.key))
            elif req.operator == "In" and len(req.values) == 1:
                terms.append(label_term(req.key, req.values[0]))
        return tuple(terms)

    def canonical(self) -> str:
        """A stable text form: equal selectors give equal strings (ovn-kubernetes' format)."""
        text = "LS{"
        if self.match_labels:
            text += "ML:{" + "".join(f"{k}: {v}," for k, v in sorted(self.match_labels)) + "},"
        if self.match_expressions:
            text += "ME:{" + ",".join(sorted(r.canonical() for r in self.match_expressions)) + "},"
        return text + "}"


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    """``metadata.labels`` of an object (empty when it has none)."""
    return (obj.get("metadata") or {}).get("labels") or {}


def label_term(key: str, value: str | None = None) -> str:
    """A value of the ``labels`` index: ``key=value``, or ``key`` alone for "has the label"."""
    return key if value is None else f"{key}={value}"


def index_by_labels(obj: Mapping[str, Any]) -> Iterable[str]:
    """Indexer behind :meth:`Store.select`: every ``key=value`` and ``key`` of the object's labels."""
    labels = labels_of(obj)
    return (*(label_term(k, v) for k, v in labels.items()), *labels.keys())


def parse_selector(raw: Any, *, field: str) -> LabelSelector:
    """Parse a ``metav1.LabelSelector`` (``None`` is the empty selector).

    :param raw: the selector as the API server returns it.
    :param field: where it sits in its object, for error messages (``spec.podSelector``).
    :raises SelectorError: the message names the field and what is wrong.
    """
    if raw is None:
        return LabelSelector()
    if not isinstance(raw, Mapping):
        raise SelectorError(f"{field} must be an object, not {raw!r}")
    labels = raw.get("matchLabels") or {}
    if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
        raise SelectorError(f"{field}.matchLabels must map label keys to strings")
    requirements = []
    for index, expr in enumerate(raw.get("matchExpressions") or []):
        where = f"{field}.matchExpressions[{index}]"
        if not isinstance(expr, Mapping) or not isinstance(expr.get("key"), str) or not expr.get("key"):
            raise SelectorError(f"{where} needs a key")
        operator = expr.get("operator")
        if operator not in OPERATORS:
            raise SelectorError(f"{where}.operator {operator!r} is not one of {', '.join(OPERATORS)}")
        values = tuple(str(v) for v in expr.get("values") or [])
        if operator in ("In", "NotIn") and not values:
            raise SelectorError(f"{where}: operator {operator} needs values")
        if operator in ("Exists", "DoesNotExist") and values:
            raise SelectorError(f"{where}: operator {operator} takes no values")
        requirements.append(Requirement(key=str(expr["key"]), operator=operator, values=values))
    return LabelSelector(match_labels=tuple(sorted((str(k), v) for k, v in labels.items())),
                         match_expressions=tuple(requirements))
