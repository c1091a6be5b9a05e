"""The subset of XPath that PAN-OS XML API clients send, over ElementTree.

Real tools address configuration with absolute paths such as
`/config/shared/certificate/entry[@name='N']`, and with a few predicate forms
(panos.md §2.1): `entry[./certificate='N']`, `member[text()='N']`, `entry[@name="N"]`, and a
trailing `/@name` to list attribute values. `*` matches any element. That is what this module
parses and evaluates; anything else is a "Bad Xpath" (code 6) for the caller to report.

The standard library's ElementTree XPath cannot do `text()`, `./child='v'` or attribute
selection, and `set` must create missing steps, which needs the parsed steps anyway.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import List, Optional, Tuple


class XPathError(ValueError):
    """The xpath is not in the supported grammar (reported as code 6, Bad Xpath)."""


@dataclass
class Predicate:
    kind: str  # "attr" (@a='v'), "child" (./c='v' or c='v'), "text" (text()='v' or .='v')
    name: str
    value: str


@dataclass
class Step:
    tag: str  # element name or "*"
    predicates: List[Predicate] = field(default_factory=list)

    def matches(self, element: ET.Element) -> bool:
        if self.tag != "*" and element.tag != self.tag:
            return False
        for pred in self.predicates:
            if pred.kind == "attr" and element.get(pred.name) != pred.value:
                return False
            if pred.kind == "text" and (element.text or "").strip() != pred.value:
                return False
            if pred.kind == "child" and not any((c.text or "").strip() == pred.value
                                                for c in element.findall(pred.name)):
                return False
        return True

    @property
    def entry_name(self) -> Optional[str]:
        """The value of an `@name` predicate, when that is the step's only predicate."""
        if len(self.predicates) == 1 and self.predicates[0].kind == "attr" \
                and self.predicates[0].name == "name":
            return self.predicates[0].value
        return None

    def creatable(self) -> bool:
        return self.tag != "*" and (not self.predicates or self.entry_name is not None)

    def create(self) -> ET.Element:
        element = ET.Element(self.tag)
        if self.entry_name is not None:
            element.set("name", self.entry_name)
        return element


@dataclass
class XPath:
    steps: List[Step]
    attribute: Optional[str] = None  # trailing /@attr

    @property
    def last(self) -> Step:
        return self.steps[-1]


_NAME = r"[A-Za-z_][\w.\-]*"
_LITERAL = r"""(?:'([^']*)'|"([^"]*)")"""
_PRED = re.compile(
    rf"""\s*(?:@(?P<attr>{_NAME})|(?:\./)?(?P<child>{_NAME})|(?P<text>text\(\)|\.))"""
    rf"""\s*=\s*{_LITERAL}\s*$""")


def _split(path: str) -> List[str]:
    """Split on '/' outside brackets and quotes."""
    parts, depth, quote, current = [], 0, "", []
    for char in path:
        if quote:
            current.append(char)
            if char == quote:
                quote = ""
            continue
        if char in "'\"":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise XPathError("unbalanced ']'")
        elif char == "/" and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quote or depth:
        raise XPathError("unterminated predicate or quote")
    parts.append("".join(current))
    return parts


def parse(path: str) -> XPath:
    if not path or not path.startswith("/"):
        raise XPathError("xpath must be absolute")
    if "//" in path.replace("'//", "").replace('"//', ""):
        raise XPathError("'//' is not supported")
    raw = _split(path)[1:]
    if not raw or raw[0] != "config":
        raise XPathError("xpath must start with /config")
    attribute = None
    if raw[-1].startswith("@"):
        attribute = raw.pop()[1:]
        if not re.fullmatch(_NAME, attribute):
            raise XPathError(f"bad attribute step @{attribute}")
    steps = []
    for text in raw:
        match = re.fullmatch(rf"({_NAME}|\*)((?:\[.*?\])*)", text)
        if not match:
            raise XPathError(f"bad step {text!r}")
        step = Step(match.group(1))
        for pred_text in re.findall(r"\[((?:[^\]'\"]|'[^']*'|\"[^\"]*\")*)\]", match.group(2)):
            pred = _PRED.match(pred_text)
            if not pred:
                raise XPathError(f"unsupported predicate [{pred_text}]")
            value = pred.group(4) if pred.group(4) is not None else pred.group(5)
            if pred.group("attr"):
                step.predicates.append(Predicate("attr", pred.group("attr"), value))
            elif pred.group("child"):
                step.predicates.append(Predicate("child", pred.group("child"), value))
            else:
                step.predicates.append(Predicate("text", "", value))
        steps.append(step)
    return XPath(steps, attribute)


def select(root: ET.Element, xpath: XPath) -> List[ET.Element]:
    """Elements matching the path (ignores a trailing attribute step)."""
    if not xpath.steps[0].matches(root):
        return []
    current = [root]
    for step in xpath.steps[1:]:
        current = [child for node in current for child in node if step.matches(child)]
        if not current:
            break
    return current


def select_with_parents(root: ET.Element,
                        xpath: XPath) -> List[Tuple[ET.Element, ET.Element]]:
    """(parent, element) pairs matching the path; the root itself cannot be selected."""
    if len(xpath.steps) < 2 or not xpath.steps[0].matches(root):
        return []
    parents = select(root, XPath(xpath.steps[:-1]))
    return [(p, c) for p in parents for c in p if xpath.last.matches(c)]


def ensure(root: ET.Element, xpath: XPath) -> ET.Element:
    """The single element at the path, creating missing steps (what `set` does).

    Raises XPathError if a missing step cannot be created (a predicate other than @name) or
    the path is ambiguous.
    """
    if not xpath.steps[0].matches(root):
        raise XPathError("xpath must start with /config")
    node = root
    for step in xpath.steps[1:]:
        found = [c for c in node if step.matches(c)]
        if len(found) > 1:
            raise XPathError(f"step {step.tag} matches {len(found)} nodes")
        if found:
            node = found[0]
            continue
        if not step.creatable():
            raise XPathError(f"cannot create {step.tag} from its predicates")
        child = step.create()
        node.append(child)
        node = child
    return node
