"""Conformance harnesses run against a lab: the NetworkPolicy truth-table cases."""
