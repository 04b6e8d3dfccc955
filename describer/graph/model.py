"""`ProcessGraph`, defined once: title, language, pools and lanes, nodes and edges.

Validated by pydantic; the API's OpenAPI document includes its JSON Schema. Every reader
(canonical text, Mermaid, BPMN) produces one and every renderer takes one, so text, drawing and
exports of a conversion always agree.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# GRAPH_MAX_NODES in settings; pass it as `context={"max_nodes": n}` to model_validate.
DEFAULT_MAX_NODES = 300
ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
LABEL_MAX_CHARS = 500


class NodeKind(StrEnum):
    START = "start"
    END = "end"
    TASK = "task"
    DECISION = "decision"  # exclusive gateway
    PARALLEL = "parallel"  # parallel gateway
    EVENT = "event"  # intermediate event
    SUBPROCESS = "subprocess"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Pool(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    name: str = Field(max_length=LABEL_MAX_CHARS)


class Lane(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    name: str = Field(max_length=LABEL_MAX_CHARS)
    pool: str | None = Field(None, description="The pool's id; null: the process's single implicit pool.")


class Node(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    kind: NodeKind
    label: str = Field("", max_length=LABEL_MAX_CHARS)
    lane: str | None = Field(None, description="The lane's id; null: no lane.")
    # Optional, so graphs stored before it existed still validate.
    note: str = Field(
        "", max_length=LABEL_MAX_CHARS, description='An explanation; for an end state, what it means ("nothing is changed").'
    )


class Edge(_Strict):
    source: str = Field(pattern=ID_PATTERN)
    target: str = Field(pattern=ID_PATTERN)
    label: str = Field("", max_length=LABEL_MAX_CHARS, description="The condition, on a decision's outgoing edge.")


class ProcessGraph(_Strict):
    """A process: who (pools, lanes) does what (nodes) in which order (edges)."""

    title: str = Field("", max_length=LABEL_MAX_CHARS)
    language: str = Field("", pattern=r"^(|en|ru|other)$", description='"en", "ru", "other" or "" (unknown).')
    pools: list[Pool] = Field(default_factory=list)
    lanes: list[Lane] = Field(default_factory=list)
    nodes: list[Node] = Field(default_factory=list)
    edges: list[Edge] = Field(default_factory=list)

    @field_validator("nodes")
    @classmethod
    def _not_too_many(cls, nodes: list[Node], info: ValidationInfo) -> list[Node]:
        limit = (info.context or {}).get("max_nodes", DEFAULT_MAX_NODES)
        if len(nodes) > limit:
            raise ValueError(f"The process has {len(nodes)} steps; at most {limit} are allowed (GRAPH_MAX_NODES).")
        return nodes

    @model_validator(mode="after")
    def _references_exist(self) -> ProcessGraph:
        _unique("pool", [pool.id for pool in self.pools])
        _unique("lane", [lane.id for lane in self.lanes])
        _unique("node", [node.id for node in self.nodes])
        pools, lanes, nodes = {p.id for p in self.pools}, {lane.id for lane in self.lanes}, {n.id for n in self.nodes}
        for lane in self.lanes:
            if lane.pool is not None and lane.pool not in pools:
                raise ValueError(f"Lane {lane.id!r} is in pool {lane.pool!r}, which does not exist.")
        for node in self.nodes:
            if node.lane is not None and node.lane not in lanes:
                raise ValueError(f"Node {node.id!r} is in lane {node.lane!r}, which does not exist.")
        for edge in self.edges:
            for end in (edge.source, edge.target):
                if end not in nodes:
                    raise ValueError(f"An edge {edge.source!r} → {edge.target!r} names {end!r}, which is no node.")
        return self

    def node(self, node_id: str) -> Node:
        return next(node for node in self.nodes if node.id == node_id)

    def outgoing(self, node_id: str) -> list[Edge]:
        return [edge for edge in self.edges if edge.source == node_id]

    def incoming(self, node_id: str) -> list[Edge]:
        return [edge for edge in self.edges if edge.target == node_id]


def _unique(what: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for item in ids:
        if item in seen:
            raise ValueError(f"Two {what}s have the id {item!r}.")
        seen.add(item)


WHITESPACE = re.compile(r"\s+")


def normalise_label(label: str) -> str:
    """For comparing graphs read from different formats: case, spacing and end punctuation aside."""
    return WHITESPACE.sub(" ", label).strip().rstrip(".:;").casefold()
